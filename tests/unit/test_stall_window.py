"""A stall is measured from a reading taken before it began: the watchdog, driven here on a
simulated clock, calls the loop healthy up to tick + threshold after its last stamp, so its
last healthy reading can fall inside a stall. Measured from there, a loop that spent the whole
stall waiting for a CPU (a busy runner) read as ~20 ms of the app's code holding it."""

from __future__ import annotations

import threading

import pytest

from pytest_fanout.measurement import stall_held_s
from pytest_fanout.servers import stallwatch
from pytest_fanout.servers.stallwatch import StallWatch

TICK = 0.005
THRESHOLD = 0.020
#: The loop stamps every tick until STALL_AT, then not again until RESUMED.
STALL_AT = 0.100
RESUMED = 0.127
END = 0.200
MS = 1_000_000


class _Clock:
    """perf_counter/sleep/thread_time on a simulated clock; each sleep moves the loop's stamp."""

    def __init__(self, watch: StallWatch) -> None:
        self.now = 0.0
        self.watch = watch

    def perf_counter(self) -> float:
        return self.now

    def thread_time(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        ticks = [i * TICK for i in range(int(STALL_AT / TICK) + 1)]
        ticks += [RESUMED + i * TICK for i in range(int((END - RESUMED) / TICK) + 1)]
        self.watch.stamp = max(t for t in ticks if t <= self.now + 1e-12)
        if self.now >= END:
            self.watch._stopped = True


def _loop_times(clock: _Clock, *, running: bool) -> tuple[int, int, int]:
    """The loop thread's (ran, every thread's waits, its own waits) in ns at `clock.now`:
    2 ms of CPU per 10 ms when healthy; in the stall, all CPU (`running`) or all waiting."""
    healthy = min(clock.now, STALL_AT + TICK) + max(0.0, clock.now - RESUMED)
    stalled = max(0.0, min(clock.now, RESUMED) - STALL_AT - TICK)
    ran = healthy * 0.2 + (stalled if running else 0.0)
    waited = 0.0 if running else stalled
    return int(ran * 1e9), int(waited * 1e9), int(waited * 1e9)


@pytest.mark.parametrize(("running", "held_ms"), [(False, 0.0), (True, 22.0)])
def test_the_stall_is_measured_from_before_it_began(
    monkeypatch: pytest.MonkeyPatch, running: bool, held_ms: float
) -> None:
    watch = StallWatch(THRESHOLD, TICK)
    clock = _Clock(watch)
    monkeypatch.setattr(stallwatch, "time", clock)
    watch._thread_id = threading.get_ident()
    monkeypatch.setattr(watch, "_sched", lambda: _loop_times(clock, running=running))
    monkeypatch.setattr(watch, "_loop_asleep", lambda: False)  # runnable or running
    watch.stamp = 0.0
    watch._run()
    (stall,) = watch._finished
    assert stall["duration_s"] == pytest.approx(0.022, abs=1e-6)
    # The watchdog's last healthy wake-up came 20 ms into the stall (at 125 ms its stamp was
    # 25 ms old: not over tick + threshold); the stall is measured from the one before it.
    # ran_s: the stall and the healthy CPU around it (from 100 ms, to the wake-up after 127).
    assert stall["ran_s"] == pytest.approx(0.022 if running else 0.0, abs=0.0025)
    assert stall_held_s(stall) == pytest.approx(held_ms / 1000, abs=0.0015)
