"""A stall is measured from a reading taken before it began: the watchdog, driven here on a
simulated clock, calls the loop healthy up to tick + threshold after its last stamp, and a busy
runner can delay it further between that check and its reading, so its last healthy reading
can fall inside a stall. Measured from there, a loop that spent the whole stall waiting for a
CPU read as the app's code holding it (a field run: 62 ms held of a 132 ms stall, /healthy)."""

from __future__ import annotations

import sysconfig
import threading
import time

import pytest

from pytest_fanout.measurement import stall_held_s
from pytest_fanout.servers import stallwatch
from pytest_fanout.servers.callstacks import GIL_WAIT, describe_stall
from pytest_fanout.servers.stallwatch import StallWatch

TICK = 0.005
THRESHOLD = 0.020
#: The loop stamps every tick until STALL_AT, then not again until the stall ends.
STALL_AT = 0.100
END = 0.300
MS = 1_000_000


class _Clock:
    """perf_counter/sleep/thread_time on a simulated clock; each sleep moves the loop's stamp.

    Only for the thread that drives the watch: it stands in for the module's `time`, and a
    watchdog thread another test left running in this process reads `time` too. Given the
    simulated clock, its sleeps moved this one (1 unit run in 4 with -n 2 beside CPU hogs
    failed so); it gets the real one."""

    def __init__(self, watch: StallWatch, resumed: float) -> None:
        self.now = 0.0
        self.watch = watch
        self.resumed = resumed
        self._owner = threading.get_ident()

    def __getattribute__(self, name: str) -> object:
        if name in ("perf_counter", "thread_time", "sleep") and threading.get_ident() != (
            object.__getattribute__(self, "_owner")
        ):
            return getattr(time, name)
        return object.__getattribute__(self, name)

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


def _loop_times(clock: _Clock, *, running: bool, delay: float) -> tuple[int, int, int, int]:
    """The loop thread's (ran, all threads' waits, its own waits, others ran) in ns at now:
    2 ms of CPU per 10 ms when healthy; in the stall, all CPU (`running`) or all waiting.
    The first reading inside the stall returns `delay` late (the watchdog preempted)."""
    if delay and STALL_AT + TICK < clock.now < clock.resumed:
        clock.now += delay
        delay = 0.0
    healthy = min(clock.now, STALL_AT + TICK) + max(0.0, clock.now - clock.resumed)
    stalled = max(0.0, min(clock.now, clock.resumed) - STALL_AT - TICK)
    ran = healthy * 0.2 + (stalled if running else 0.0)
    waited = 0.0 if running else stalled
    return int(ran * 1e9), int(waited * 1e9), int(waited * 1e9), 0


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

    def sched() -> tuple[int, int, int, int]:
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
    assert stall_held_s(stall) == pytest.approx(held_ms / 1000, abs=0.0025)


def _runner_stall(
    *, ran_s: float, starved_s: float, stdlib: bool, waited_s: float = 0.0, others: float = 0.0
) -> dict:
    """A 130 ms stall whose every sample found the loop thread at its runner: under uvloop
    (asyncio.run, the loop in C) or the stdlib loop (polling in its selector)."""
    lib = sysconfig.get_paths()["stdlib"]
    frames = [
        {"file": f"{lib}/asyncio/runners.py", "line": 118, "function": "Runner.run"},
        {"file": "<built-in>", "line": 0, "function": "self._loop.run_until_complete"},
    ]
    if stdlib:
        frames[1:] = [
            {"file": f"{lib}/asyncio/base_events.py", "line": 1884, "function": "_run_once"},
            {"file": f"{lib}/selectors.py", "line": 468, "function": "EpollSelector.select"},
            {"file": "<built-in>", "line": 0, "function": "self._selector.poll"},
        ]
    stack = {"count": 20, "frames": frames, "seen_s": 0.13, "held_s": 0.13}
    return {
        "duration_s": 0.13,
        "ran_s": ran_s,
        "starved_s": starved_s,
        "waited_s": waited_s,
        "others_ran_s": others,
        "stacks": [stack],
    }


@pytest.mark.parametrize("stdlib", [False, True])
def test_a_loop_waiting_for_the_gil_at_its_runner_is_named_so(stdlib: bool) -> None:
    """Off the CPU at its runner (ran 2 ms of 130, no wait for a CPU): another thread held
    the GIL. Runnable there instead (a busy runner's CPU wait): not the GIL, and not held."""
    gil = _runner_stall(ran_s=0.002, starved_s=0.0, stdlib=stdlib, others=0.128)
    assert describe_stall(gil).startswith(f"{GIL_WAIT} (the loop thread waited for it")
    assert stall_held_s(gil) == pytest.approx(0.13)
    busy = _runner_stall(ran_s=0.002, starved_s=0.128, stdlib=stdlib, waited_s=0.128)
    assert GIL_WAIT not in describe_stall(busy)
    assert stall_held_s(busy) == pytest.approx(0.002)  # its CPU


def test_a_gil_holder_waiting_for_a_cpu_beside_hogs_still_holds_the_loop_for_its_cpu() -> None:
    """Beside CPU hogs the thread holding the GIL ran 60 ms and waited 68 ms for a CPU: the
    waits, summed, filled the stall (held 0 before); held: the 60 ms it ran, the loop off the
    CPU meanwhile. With no other thread running, the same stall holds nothing."""
    gil = _runner_stall(ran_s=0.002, starved_s=0.13, stdlib=False, others=0.06)
    assert stall_held_s(gil) == pytest.approx(0.06)
    idle = _runner_stall(ran_s=0.002, starved_s=0.13, stdlib=False, others=0.0)
    assert stall_held_s(idle) == pytest.approx(0.002)
    below = _runner_stall(ran_s=0.002, starved_s=0.13, stdlib=False, others=0.06)
    below["stacks"][0]["frames"].append(
        {"file": "/srv/shop/views.py", "line": 3, "function": "handler"}
    )
    assert stall_held_s(below) == pytest.approx(0.002)  # a callback: not the runner


def test_a_callback_below_the_runner_is_not_the_gil() -> None:
    """A library's callback under the runner, the loop off the CPU: named by the library."""
    stall = _runner_stall(ran_s=0.002, starved_s=0.0, stdlib=False)
    stall["stacks"][0]["frames"][1:] = [
        {
            "file": "/venv/lib/python3.11/site-packages/anyio/_core/_sockets.py",
            "line": 9,
            "function": "connect_tcp",
        },
    ]
    assert not describe_stall(stall).startswith(GIL_WAIT)


def test_the_loop_threads_own_cpu_is_held_whatever_the_other_threads_waited() -> None:
    """A CPU loop beside CPU hogs (an e2e run, /cpu): 1.8 s long, the loop thread ran 0.4 s
    of it; every thread's waits, summed, filled the whole stall. Held: its CPU, not 0."""
    frames = [{"file": "/srv/shop/helpers.py", "line": 21, "function": "crunch"}]
    stack = {"count": 60, "frames": frames, "seen_s": 1.8, "held_s": 0.4}
    stall = {"duration_s": 1.825, "ran_s": 0.401, "starved_s": 1.825, "stacks": [stack]}
    assert stall_held_s(stall) == pytest.approx(0.401)
    stall.update(gc_s=0.1)  # the collector's share of the loop's CPU is not the code's
    assert stall_held_s(stall) == pytest.approx(0.401 - 0.1 * 0.401 / (0.401 + 1.825))


def test_a_gil_holder_beside_hogs_is_named_by_the_loop_threads_own_times() -> None:
    """The e2e run beside 4 hogs: a 458 ms stall at the runner, every thread's waits filling
    it, the per-stack figures saying the loop neither slept nor ran; by its own times the
    loop thread was off the CPU: the GIL, not "waited in that call"."""
    gil = _runner_stall(ran_s=0.002, starved_s=0.13, stdlib=False, waited_s=0.004, others=0.06)
    gil["stacks"][0].update(ran_s=0.0, slept_s=0.0)
    assert describe_stall(gil).startswith(GIL_WAIT)
    busy = _runner_stall(ran_s=0.002, starved_s=0.13, stdlib=False, waited_s=0.125)
    busy["stacks"][0].update(ran_s=0.0, slept_s=0.0)
    assert not describe_stall(busy).startswith(GIL_WAIT)


def test_the_cpu_before_the_stall_is_not_held() -> None:
    """A busy, healthy /async/1000: a 41 ms stall, 3 ms of it waiting for a CPU; the loop's
    CPU was read from the watchdog's reading 20 ms before the stall began, so `ran_s` (capped
    at the duration) holds CPU from before it. Read as "held 41 ms" (past the 40 ms limit)
    before the lead was taken off; held: the stall less its wait."""
    frames = [{"file": "/srv/app/fanout.py", "line": 97, "function": "fetch_on_session"}]
    stack = {"count": 7, "frames": frames, "seen_s": 0.041, "held_s": 0.0}
    stall = {"duration_s": 0.041, "ran_s": 0.041, "starved_s": 0.003, "stacks": [stack]}
    assert stall_held_s(stall) == pytest.approx(0.041)  # no lead: all of its CPU is the stall's
    stall.update(lead_s=0.020)
    assert stall_held_s(stall) == pytest.approx(0.038)
    # A real hold keeps its CPU, less at most the lead: a 100 ms CPU loop stays held.
    stall.update(duration_s=0.100, ran_s=0.100, starved_s=0.100)
    assert stall_held_s(stall) == pytest.approx(0.080)
