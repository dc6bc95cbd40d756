"""The probe's own CPU is not the app's: its watchdog thread (read from the thread's CPU clock)
and its lag ticks (priced from idle ticks) are taken off the app's CPU per request. Both grow
with wall time: before, the same code read 3 ms a request at a 20 ms upstream delay and 58 ms
at 2 s, and the gate's 5% was of that."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest

from pytest_fanout.servers import probe as probe_module
from pytest_fanout.servers.probe import MIN_IDLE_TICKS, MIN_OWN_TICKS, LoopProbe
from pytest_fanout.servers.proctree import SchedStats, thread_schedstats
from pytest_fanout.servers.stallwatch import StallWatch


async def _nothing(scope: dict, receive: object, send: object) -> None:
    raise AssertionError("the probe's path must not reach the app")


def _read(probe: LoopProbe) -> dict:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": probe_module.PROBE_PATH, "headers": []}
    asyncio.run(probe._serve(scope, send))
    return json.loads(sent[-1]["body"])


def test_no_price_before_enough_idle_ticks() -> None:
    probe = LoopProbe(_nothing)
    probe._idle_ticks.extend([0.0001] * (MIN_IDLE_TICKS - 1))
    assert probe.tick_price_s() is None
    probe._idle_ticks.append(0.0001)
    assert probe.tick_price_s() == pytest.approx(0.0001)


def test_an_idle_tick_that_held_something_else_is_left_out() -> None:
    probe = LoopProbe(_nothing)
    # 30 ticks of 100 us and two that also ran a collection (3.1 and 30 times a tick).
    probe._idle_ticks.extend([0.0001] * 30 + [0.00031, 0.0030])
    assert probe.tick_price_s() == pytest.approx(0.0001)


def test_the_servers_own_timer_is_in_the_price() -> None:
    """uvicorn wakes ten times a second on its own: one tick in twenty also ran its timer
    (2.5 times a tick here). That is the loop's cost between requests, not a request's:
    in the price, it comes off every sample in proportion to its length."""
    probe = LoopProbe(_nothing)
    probe._idle_ticks.extend(([0.0001] * 19 + [0.00025]) * 2)
    assert probe.tick_price_s() == pytest.approx((19 * 0.0001 + 0.00025) / 20)
    probe._own_ticks = ([0.00008] * 19 + [0.0002]) * 2
    assert probe.sample_tick_price_s() == pytest.approx((19 * 0.00008 + 0.0002) / 20)


def test_a_sample_with_enough_clean_ticks_of_its_own_is_priced_by_them() -> None:
    probe = LoopProbe(_nothing)
    probe._idle_ticks.extend([0.0001] * MIN_IDLE_TICKS)  # taken right after a request
    # A long wait on upstreams: its ticks cost 80 us; the wave's ticks that ran the app's
    # work with them (310 us, over 3 idle ticks) are not ticks' cost.
    probe._own_ticks = [0.00008] * MIN_OWN_TICKS + [0.00031] * 3
    assert probe.sample_tick_price_s() == pytest.approx(0.00008)
    # Too few of its own (a short sample, a path of waves 10 ms apart): the idle price.
    probe._own_ticks = [0.00008] * (MIN_OWN_TICKS - 1) + [0.00031] * 9
    assert probe.sample_tick_price_s() == pytest.approx(0.0001)
    # No idle price yet: nothing to tell a clean tick by.
    assert LoopProbe(_nothing).sample_tick_price_s() is None


def test_price_waits_for_new_idle_ticks_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """`?price=1` returns once the monitor has taken MIN_IDLE_TICKS new idle ticks (a real
    loop, real ticks, nothing else on it), and gives up after PRICE_WAIT_S on a loop that is
    never idle."""

    async def run() -> tuple[int, float]:
        probe = LoopProbe(_nothing, tick_s=0.001)
        probe._monitor = asyncio.get_running_loop().create_task(probe._watch_loop())
        try:
            before = probe._idle_count
            await probe._take_price()
            new = probe._idle_count - before
            probe.stats.inflight = 1  # a request that never ends: no tick is idle
            monkeypatch.setattr(probe_module, "PRICE_WAIT_S", 0.05)
            began = time.perf_counter()
            await probe._take_price()
            return new, time.perf_counter() - began
        finally:
            probe._monitor.cancel()
            if probe.stall_watch is not None:
                probe.stall_watch.stop()

    new, waited = asyncio.run(run())
    assert new >= MIN_IDLE_TICKS
    assert 0.04 <= waited < 1.0


def test_the_app_cpu_is_the_process_less_the_watchdog_and_the_ticks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = LoopProbe(_nothing)
    probe._cpu_at_reset = (0.5, 0.1)
    monkeypatch.setattr(probe, "_cpu_now", lambda: (1.0, 0.2))  # the process, the watchdog
    probe.stats.ticks = 1000
    probe._idle_ticks.extend([0.0001] * MIN_IDLE_TICKS)
    data = _read(probe)
    assert data["process_cpu_s"] == pytest.approx(0.5)
    assert data["tick_price_s"] == pytest.approx(0.0001)
    assert data["tick_cpu_s"] == pytest.approx(0.1)
    assert data["cpu_s"] == pytest.approx(0.5 - 0.1 - 0.1)


def test_unpriced_ticks_stay_in_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = LoopProbe(_nothing)
    probe._cpu_at_reset = (0.5, 0.1)
    monkeypatch.setattr(probe, "_cpu_now", lambda: (1.0, 0.2))
    probe.stats.ticks = 1000
    data = _read(probe)
    assert data["tick_price_s"] is None and data["tick_cpu_s"] is None
    assert data["cpu_s"] == pytest.approx(0.4)


def test_the_watchdog_cpu_is_its_own_thread_not_the_caller() -> None:
    # A threshold of a minute: the burn below is no stall, so the watchdog only sleeps.
    watch = StallWatch(60.0, 0.005)
    watch.start(threading.get_ident())
    try:
        before = watch.cpu_s()
        end = time.thread_time() + 0.05
        while time.thread_time() < end:  # 50 ms of this thread's CPU
            pass
        spent = watch.cpu_s() - before
        assert 0 <= spent < 0.025
    finally:
        watch.stop()


@pytest.mark.skipif(thread_schedstats() is None, reason="Linux's /proc")
def test_kept_open_readings_match_and_a_thread_that_ended_is_dropped() -> None:
    reader = SchedStats()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        first = reader.read()
        assert first is not None and str(other.native_id) in first
        assert set(first) == set(thread_schedstats() or {})
        stop.set()
        other.join(5)
        # join() returns before the kernel has removed the thread's task: wait for that
        # (bounded), the condition itself, then read again.
        task = f"/proc/self/task/{other.native_id}"
        deadline = time.monotonic() + 5
        while os.path.exists(task) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert not os.path.exists(task)
        after = reader.read()
        assert after is not None and str(other.native_id) not in after
        assert set(reader._fds) == set(after)  # the ended thread's file is closed
        mine = str(threading.get_native_id())
        assert after[mine][0] >= first[mine][0]
    finally:
        stop.set()
        reader.close()
    assert reader._fds == {}
