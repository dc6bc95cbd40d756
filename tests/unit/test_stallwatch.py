"""The stack sampler in this process: a real asyncio loop, a real watchdog thread, real stalls."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pytest_fanout.servers.callstacks import describe_stall
from pytest_fanout.servers.stallwatch import (
    BUILTIN_FILE,
    MAX_SAMPLES,
    MAX_STALLS,
    StallWatch,
    next_sample_at,
    stall_threshold_from_env,
)

TICK_S = 0.005


def _sleep_in_helper() -> None:
    time.sleep(0.15)


def _spin_cpu() -> int:
    total = 0
    for i in range(3_000_000):
        total += i * i
    return total


def _watch_while(blockers: list) -> list[dict]:
    """Run each blocker on a loop that stamps the watch every tick; return the stalls seen."""
    watch = StallWatch(0.02, TICK_S)

    async def tick() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            watch.stamp = time.perf_counter()

    async def main() -> list[dict]:
        ticker = asyncio.create_task(tick())
        watch.start(threading.get_ident())
        await asyncio.sleep(0.03)
        for block in blockers:
            block()
            await asyncio.sleep(0.03)
        ticker.cancel()
        return watch.stalls()

    try:
        return asyncio.run(main())
    finally:
        watch.stop()


def test_a_sleep_in_a_helper_is_named_with_its_call() -> None:
    stalls = _watch_while([_sleep_in_helper])
    stall = stalls[0]  # the longest (a busy machine may add short ones)
    assert 0.1 < stall["duration_s"] < 2.0
    top = stall["stacks"][0]["frames"]
    assert top[-1] == {"file": BUILTIN_FILE, "line": 0, "function": "time.sleep"}
    assert top[-2]["function"] == "_sleep_in_helper"
    assert top[-2]["file"] == __file__
    assert describe_stall(stall).endswith("in _sleep_in_helper -> time.sleep")


def test_a_cpu_loop_is_named_as_cpu() -> None:
    stalls = _watch_while([_spin_cpu])
    assert stalls[0]["stacks"], "a CPU stall of ~100 ms must be sampled"
    top = stalls[0]["stacks"][0]["frames"]
    assert top[-1]["function"] == "_spin_cpu"
    assert describe_stall(stalls[0]).endswith("in _spin_cpu (CPU)")


def test_a_healthy_loop_has_no_stall() -> None:
    # Nothing blocks: at most a short stall when the busy machine deschedules the process.
    assert all(s["duration_s"] < 0.1 for s in _watch_while([lambda: None, lambda: None]))


def test_only_the_longest_stalls_are_kept() -> None:
    blockers = [lambda: time.sleep(0.04)] * (MAX_STALLS + 2) + [lambda: time.sleep(0.2)]
    stalls = _watch_while(blockers)
    assert len(stalls) == MAX_STALLS
    durations = [s["duration_s"] for s in stalls]
    assert durations == sorted(durations, reverse=True)
    assert durations[0] > 0.15


def test_a_stall_of_a_minute_is_sampled_a_bounded_number_of_times() -> None:
    since, now, samples = 0.0, 0.025, 0
    while now < 60.0:
        samples += 1
        now = next_sample_at(now, since)
    assert samples < MAX_SAMPLES
    assert samples > 100  # still sampled all along


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 0.020),
        ({"PYTEST_FANOUT_STALL_MS": "50"}, 0.050),
        ({"PYTEST_FANOUT_STACKS": "0"}, None),
        ({"PYTEST_FANOUT_STACKS": "off", "PYTEST_FANOUT_STALL_MS": "junk"}, None),
    ],
)
def test_threshold_from_env(env: dict[str, str], expected: float | None) -> None:
    assert stall_threshold_from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PYTEST_FANOUT_STALL_MS": "0"}, "PYTEST_FANOUT_STALL_MS must be a positive number"),
        ({"PYTEST_FANOUT_STALL_MS": "abc"}, "got 'abc'"),
        ({"PYTEST_FANOUT_STACKS": "maybe"}, "PYTEST_FANOUT_STACKS must be 1 or 0"),
    ],
)
def test_bad_settings_are_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        stall_threshold_from_env(env)
    assert "\n" not in str(info.value)
