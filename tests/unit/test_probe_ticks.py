"""The probe's own CPU is not the app's: its watchdog thread (read from the thread's CPU clock)
and its lag ticks (priced from quiet ticks) are taken off the app's CPU per request. Both grow
with wall time: before, the same code read 3 ms a request at a 20 ms upstream delay and 58 ms
at 2 s, and the gate's 5% was of that."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from pytest_fanout.servers import probe as probe_module
from pytest_fanout.servers.probe import MIN_QUIET_TICKS, RECENT_QUIET_TICKS, LoopProbe
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


def test_no_price_before_enough_quiet_ticks() -> None:
    probe = LoopProbe(_nothing)
    probe._quiet_ticks.extend([0.0001] * (MIN_QUIET_TICKS - 1))
    assert probe.tick_price_s() is None
    probe._quiet_ticks.append(0.0001)
    assert probe.tick_price_s() == pytest.approx(0.0001)


def test_a_quiet_tick_that_held_something_else_is_left_out() -> None:
    probe = LoopProbe(_nothing)
    # 30 ticks of 100 us and two that also ran a collection or a connection's close.
    probe._quiet_ticks.extend([0.0001] * 30 + [0.0009, 0.0030])
    assert probe.tick_price_s() == pytest.approx(0.0001)


def test_a_sample_with_enough_quiet_ticks_of_its_own_is_priced_by_them() -> None:
    probe = LoopProbe(_nothing)
    # The processor was slower before the reset: the sample's own ticks price it.
    probe._quiet_ticks.extend([0.0002] * RECENT_QUIET_TICKS)
    probe._quiet_ticks.extend([0.0001] * MIN_QUIET_TICKS)
    probe._quiet_since_reset = MIN_QUIET_TICKS
    assert probe.tick_price_s() == pytest.approx(0.0001)
    # Too few of its own: the latest RECENT_QUIET_TICKS price it.
    probe._quiet_since_reset = MIN_QUIET_TICKS - 1
    expected = (0.0002 * (RECENT_QUIET_TICKS - MIN_QUIET_TICKS) + 0.0001 * MIN_QUIET_TICKS) / (
        RECENT_QUIET_TICKS
    )
    assert probe.tick_price_s() == pytest.approx(expected)


def test_the_app_cpu_is_the_process_less_the_watchdog_and_the_ticks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = LoopProbe(_nothing)
    probe._cpu_at_reset = (0.5, 0.1)
    monkeypatch.setattr(probe, "_cpu_now", lambda: (1.0, 0.2))  # the process, the watchdog
    probe.stats.ticks = 1000
    probe._quiet_ticks.extend([0.0001] * MIN_QUIET_TICKS)
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
    watch = StallWatch(0.020, 0.005)
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
        after = reader.read()
        assert after is not None and str(other.native_id) not in after
        assert set(reader._fds) == set(after)  # the ended thread's file is closed
        mine = str(threading.get_native_id())
        assert after[mine][0] >= first[mine][0]
    finally:
        stop.set()
        reader.close()
    assert reader._fds == {}
