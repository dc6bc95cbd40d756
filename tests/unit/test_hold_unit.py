"""Hold mode of the stub, in-process: waves by construction, counts, bounds, bad settings.

The clients here are coroutines in the stub's own loop, so a wave's calls all
arrive before the loop can run the quiet-window watcher: the waves are exact
whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx2
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.hold import HoldError, HoldSettings, app_busy
from pytest_fanout.servers.upstream import StubUpstream

#: Short quiet windows keep these tests fast; the waves do not depend on them.
FAST = {"quiet_min_ms": 20, "quiet_max_ms": 40}


def run(coro):
    return asyncio.run(coro)


def _client(stub: StubUpstream) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=stub),
        base_url="http://stub",
        headers={"Authorization": f"Bearer {stub.token}"},
        timeout=30,
    )


async def _held(stub: StubUpstream, client: httpx2.AsyncClient, work, settings=FAST) -> dict:
    armed = await client.post("/__upstream__/hold", json=settings)
    assert armed.status_code == 200, armed.text
    await work()
    return (await client.delete("/__upstream__/hold")).json()


def test_a_gather_is_one_wave_a_loop_is_waves_of_one_a_semaphore_its_bound() -> None:
    # A delay far beyond the test: a call that waited for it instead of its wave would hang.
    stub = StubUpstream(Behaviour(delay_ms=600_000))

    async def scenario() -> list[list[int]]:
        async with _client(stub) as client:

            async def gather() -> None:
                await asyncio.gather(*(client.get(f"/i/{i}") for i in range(25)))

            async def loop() -> None:
                for i in range(4):
                    await client.get(f"/i/{i}")

            semaphore = asyncio.Semaphore(7)

            async def bounded(i: int) -> None:
                async with semaphore:
                    await client.get(f"/i/{i}")

            async def sem() -> None:
                await asyncio.gather(*(bounded(i) for i in range(40)))

            return [(await _held(stub, client, w))["waves"] for w in (gather, loop, sem)]

    assert run(scenario()) == [[25], [1, 1, 1, 1], [7, 7, 7, 7, 7, 5]]


def test_a_lone_call_held_its_single_quiet_window_takes_a_limiters_next_one() -> None:
    """Calls a limiter lets through one every 40 ms: with the 20 ms quiet window each can
    be a wave of its own ("one at a time"); holding a lone call 400 ms (single_quiet_ms, set
    for a rate-limited upstream) the next comes meanwhile, and the gaps keep the wave open
    (4x the longest). A loop that awaits each call still reads waves of one: it cannot send
    while its call is held, however long the window."""
    stub = StubUpstream(Behaviour(delay_ms=600_000))

    async def scenario(settings: dict) -> tuple[list[int], list[int]]:
        async with _client(stub) as client:

            async def paced() -> None:
                async def one(i: int) -> None:
                    await asyncio.sleep(0.04 * i)  # the limiter's turn for call i
                    await client.get(f"/i/{i}")

                await asyncio.gather(*(one(i) for i in range(4)))

            async def loop() -> None:
                for i in range(3):
                    await client.get(f"/i/{i}")

            first = (await _held(stub, client, paced, settings))["waves"]
            second = (await _held(stub, client, loop, settings))["waves"]
            return first, second

    lone = {**FAST, "single_quiet_ms": 400, "quiet_max_ms": 600}
    assert run(scenario(lone)) == ([4], [1, 1, 1])


def test_paced_hold_holds_a_lone_call_for_the_slowest_limit() -> None:
    from pytest_fanout.servers.held import paced_hold

    assert paced_hold(None) == {} and paced_hold({"max_inflight": 0}) == {}
    assert paced_hold({"per_s": 10.0}) == {"single_quiet_ms": 250.0, "quiet_max_ms": 500.0}
    route = {"per_s": 10.0, "routes": {"GET /x": {"per_s": 1.0}}}
    assert paced_hold(route) == {"single_quiet_ms": 2000.0, "quiet_max_ms": 2000.0}


def test_a_count_releases_at_once_and_a_disarmed_stub_answers_after_its_delay() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0))

    async def scenario() -> tuple[dict, int]:
        async with _client(stub) as client:

            async def twelve() -> None:
                await asyncio.gather(*(client.get(f"/i/{i}") for i in range(12)))

            report = await _held(stub, client, twelve, {**FAST, "count": 5})
            after = await client.get("/i/after")
            return report, after.status_code

    report, status = run(scenario())
    assert report["waves"] == [5, 5, 2] and report["error"] is None
    assert status == 200 and not stub.holder.armed


def test_past_max_calls_the_hold_ends_with_a_reason_and_nothing_hangs() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0))

    async def scenario() -> dict:
        async with _client(stub) as client:

            async def many() -> None:
                answers = await asyncio.gather(*(client.get(f"/i/{i}") for i in range(30)))
                assert {a.status_code for a in answers} == {200}

            return await _held(stub, client, many, {**FAST, "max_calls": 10})

    report = run(scenario())
    assert "max_calls=10" in report["error"] and "kept sending" in report["error"]
    assert report["waves"][0] == 10 and not report["armed"]


def test_a_wave_open_past_max_wave_s_ends_the_hold() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0))

    async def scenario() -> dict:
        async with _client(stub) as client:

            async def trickle() -> None:
                # A call every 10 ms for 0.5 s: never quiet for the 200 ms window.
                tasks = []
                for i in range(50):
                    tasks.append(asyncio.create_task(client.get(f"/i/{i}")))
                    await asyncio.sleep(0.01)
                await asyncio.gather(*tasks)

            settings = {"quiet_min_ms": 200, "quiet_max_ms": 200, "max_wave_s": 0.3}
            return await _held(stub, client, trickle, settings)

    report = run(scenario())
    assert "max_wave_s" in report["error"] and "never stopped sending" in report["error"]


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"bogus": 1}, "unknown hold setting"),
        ({"count": -1}, ">= 0"),
        ({"count": 2.5}, "whole number"),
        ({"quiet_min_ms": float("nan")}, "finite"),
        ({"quiet_min_ms": True}, "not a number"),
        ({"quiet_min_ms": 900, "quiet_max_ms": 100}, "must not exceed"),
        ({"max_calls": 0}, "max_calls"),
        ({"max_wave_s": 0}, "max_wave_s"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_hold_settings_are_one_line(settings: object, reason: str) -> None:
    with pytest.raises(HoldError, match=reason):
        HoldSettings.from_json(settings)


def test_bad_hold_settings_over_http_are_a_422() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0))

    async def scenario() -> httpx2.Response:
        async with _client(stub) as client:
            return await client.post("/__upstream__/hold", json={"count": "x"})

    answer = run(scenario())
    assert answer.status_code == 422 and "not a number" in answer.json()["detail"]
    assert not stub.holder.armed


def test_restore_ends_a_hold() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0))

    async def scenario() -> None:
        async with _client(stub) as client:
            await client.post("/__upstream__/hold", json=FAST)
            assert (await client.get("/__upstream__/hold")).json()["armed"]
            await client.post("/__upstream__/restore", json={})

    run(scenario())
    assert not stub.holder.armed


def _state(pid: int) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0]


def test_an_idle_process_is_not_busy_a_spinning_one_is() -> None:
    if not os.path.exists(f"/proc/{os.getpid()}/task"):
        pytest.skip("reads /proc (Linux)")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:

        async def scenario() -> tuple[bool, bool, bool]:
            deadline = time.monotonic() + 20
            while _state(sleeper.pid) != b"S":  # started, imported, asleep
                assert time.monotonic() < deadline, "the sleeper never slept"
                await asyncio.sleep(0.01)
            idle = await app_busy(sleeper.pid, 0.05)
            busy = await app_busy(spinner.pid, 0.05)
            gone = await app_busy(2**22 + 12345, 0.01)  # no such process: cannot tell
            return idle, busy, gone

        assert run(scenario()) == (False, True, False)
    finally:
        for proc in (sleeper, spinner):
            proc.kill()
            proc.wait(5)


def test_an_app_that_never_goes_idle_ends_the_hold_after_max_busy_s() -> None:
    """Issue 32 #7: with the app's pid, the hold waits while the app is busy; a process that
    is never idle (a thread at 100% CPU) ends it after max_busy_s, `never_idle` set, the held
    calls answered; max_wave_s (2 s here) is not what ended it."""
    if not os.path.exists(f"/proc/{os.getpid()}/task"):
        pytest.skip("reads /proc (Linux)")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    stub = StubUpstream(Behaviour(delay_ms=0))
    try:

        async def scenario() -> tuple[dict, list[int]]:
            async with _client(stub) as client:
                codes: list[int] = []

                async def gather() -> None:
                    answers = await asyncio.gather(*(client.get(f"/i/{i}") for i in range(3)))
                    codes.extend(a.status_code for a in answers)

                settings = {**FAST, "app_pid": spinner.pid, "max_busy_s": 0.3, "max_wave_s": 2}
                return await _held(stub, client, gather, settings), codes

        report, codes = run(scenario())
    finally:
        spinner.kill()
        spinner.wait()
    assert report["never_idle"] is True, report
    assert "max_busy_s" in report["error"] and "never lets it go idle" in report["error"]
    assert report["waves"] == [3] and codes == [200, 200, 200]


@pytest.mark.parametrize("value", [0, -1, float("nan"), True])
def test_a_bad_max_busy_s_is_one_line(value: object) -> None:
    with pytest.raises(HoldError):
        HoldSettings.from_json({"max_busy_s": value})
