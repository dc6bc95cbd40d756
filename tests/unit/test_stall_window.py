"""A stall is measured from a reading taken before it began: the watchdog, driven here on a
simulated clock, calls the loop healthy up to tick + threshold after its last stamp, and a busy
runner can delay it further between that check and its reading, so its last healthy reading
can fall inside a stall. Measured from there, a loop that spent the whole stall waiting for a
CPU read as the app's code holding it (a field run: 62 ms held of a 132 ms stall, /healthy)."""

from __future__ import annotations

import threading

import pytest

from pytest_fanout.measurement import stall_held_s
from pytest_fanout.servers import stallwatch
from pytest_fanout.servers.stallwatch import StallWatch

TICK = 0.005
THRESHOLD = 0.020
#: The loop stamps every tick until STALL_AT, then not again until the stall ends.
STALL_AT = 0.100
END = 0.300
MS = 1_000_000


class _Clock:
    """perf_counter/sleep/thread_time on a simulated clock; each sleep moves the loop's stamp."""

    def __init__(self, watch: StallWatch, resumed: float) -> None:
        self.now = 0.0
        self.watch = watch
        self.resumed = resumed

    def perf_counter(self) -> float:
        return self.now

    def thread_time(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        ticks = [i * TICK for i in range(int(STALL_AT / TICK) + 1)]
        ticks += [self.resumed + i * TICK for i in range(int((END - self.resumed) / TICK) + 1)]
        self.watch.stamp = max(t for t in ticks if t <= self.now + 1e-12)
        if self.now >= END:
            self.watch._stopped = True


def _loop_times(clock: _Clock, *, running: bool, delay: float) -> tuple[int, int, int]:
    """The loop thread's (ran, every thread's waits, its own waits) in ns at `clock.now`:
    2 ms of CPU per 10 ms when healthy; in the stall, all CPU (`running`) or all waiting.
    The first reading inside the stall returns `delay` late (the watchdog preempted)."""
    if delay and STALL_AT + TICK < clock.now < clock.resumed:
        clock.now += delay
        delay = 0.0
    healthy = min(clock.now, STALL_AT + TICK) + max(0.0, clock.now - clock.resumed)
    stalled = max(0.0, min(clock.now, clock.resumed) - STALL_AT - TICK)
    ran = healthy * 0.2 + (stalled if running else 0.0)
    waited = 0.0 if running else stalled
    return int(ran * 1e9), int(waited * 1e9), int(waited * 1e9)


@pytest.mark.parametrize(
    ("running", "delay", "resumed", "held_ms"),
    [
        (False, 0.0, 0.127, 0.0),  # a 22 ms wait for a CPU: held for 20 ms before the fix
        (True, 0.0, 0.127, 22.0),  # 22 ms of code on the CPU: held, all of it
        (False, 0.060, 0.237, 0.0),  # the watchdog 60 ms late: 132 ms, 80 ms held before
    ],
)
def test_the_stall_is_measured_from_before_it_began(
    monkeypatch: pytest.MonkeyPatch, running: bool, delay: float, resumed: float, held_ms: float
) -> None:
    watch = StallWatch(THRESHOLD, TICK)
    clock = _Clock(watch, resumed)
    monkeypatch.setattr(stallwatch, "time", clock)
    watch._thread_id = threading.get_ident()
    late = [delay]

    def sched() -> tuple[int, int, int]:
        times = _loop_times(clock, running=running, delay=late[0])
        if clock.now > STALL_AT + TICK:
            late[0] = 0.0
        return times

    monkeypatch.setattr(watch, "_sched", sched)
    monkeypatch.setattr(watch, "_loop_asleep", lambda: False)  # runnable or running
    watch.stamp = 0.0
    watch._run()
    (stall,) = watch._finished
    assert stall["duration_s"] == pytest.approx(resumed - STALL_AT - TICK, abs=1e-6)
    # The watchdog's last healthy wake-up came 20 ms into the stall (at 125 ms its stamp was
    # 25 ms old: not over tick + threshold); the stall is measured from the one before it.
    # ran_s: the stall and the healthy CPU around it (from 100 ms, to the wake-up after 127).
    assert stall["ran_s"] == pytest.approx(held_ms / 1000, abs=0.0025)
    assert stall_held_s(stall) == pytest.approx(held_ms / 1000, abs=0.0015)
