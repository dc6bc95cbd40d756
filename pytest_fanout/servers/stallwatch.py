"""The blocking stack: which code held the event loop, sampled from a watchdog thread.

The loop probe stamps the time on every tick of its monitor task. A daemon
thread wakes every few milliseconds and compares: a stamp older than the
threshold means the loop is stalled, and while the stall lasts the thread
samples the loop thread's stack (`sys._current_frames`, CPython's documented
way to read another thread's frames) and counts each distinct stack. When the
loop stamps again, the stall is summarised: its duration and its few most
frequent stacks. A healthy loop costs one comparison per wake-up and nothing
per request.

Bounded in time and memory: samples thin out as a stall drags on (a stall of
a minute keeps a few hundred), and distinct stacks per stall, frames per
stack and stalls per reset are capped. `PYTEST_FANOUT_STACKS=0` switches the
sampler off; `PYTEST_FANOUT_STALL_MS` sets the threshold (default 20 ms).
"""

from __future__ import annotations

import dis
import linecache
import os
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_fanout.limits import BUILTIN_FILE, GC_FUNCTION
from pytest_fanout.servers.gcwatch import GcWatch
from pytest_fanout.servers.proctree import SchedStats

ENV_STACKS = "PYTEST_FANOUT_STACKS"
ENV_STALL_MS = "PYTEST_FANOUT_STALL_MS"
#: A loop that has not run for this long (beyond its tick) is stalled.
DEFAULT_STALL_S = 0.020

MAX_STALLS = 8  # kept per reset: the longest
TOP_STACKS = 3  # kept per stall: the most frequent
MAX_DISTINCT = 32  # distinct stacks counted per stall
MAX_DEPTH = 48  # innermost frames kept per stack
MAX_SAMPLES = 400  # per stall, whatever its length
SAMPLE_S = 0.005  # between samples at the start of a stall
THIN = 50  # then every (time stalled / THIN): logarithmically many samples
#: The watchdog's last healthy readings of the loop thread's scheduler times: a stall is
#: measured from the latest one taken before it began.
READINGS = 4
#: The opcodes of a call, de-specialised (`dis.get_instructions(adaptive=False)`): a warm
#: call site on 3.11 is caught at its PRECALL (a specialised PRECALL calls a builtin itself),
#: on 3.12+ at its CALL.
_CALL_OPS = frozenset({"CALL", "CALL_FUNCTION_EX", "CALL_KW", "PRECALL"})
_CALLEE_CACHE_MAX = 512
#: Between two samples, a loop thread that ran more than this share of the time was running
#: code (on a runner 5x oversubscribed CPU code still runs 20%); a sleep or a read runs ~0.
CPU_SHARE = 0.1

Frame = tuple[str, int, str]
Stack = tuple[Frame, ...]
#: Nanoseconds: (the loop thread ran, every thread of the app waited for a CPU, the loop
#: thread waited for one, the app's other threads ran (not the loop's, not the watchdog's)).
Clock = tuple[int, int, int, int]


def stall_threshold_from_env(environ: Mapping[str, str] | None = None) -> float | None:
    """The threshold in seconds, or None when the sampler is switched off.

    Raises ValueError with a one-line reason for a value it cannot use.
    """
    env = os.environ if environ is None else environ
    switch = env.get(ENV_STACKS, "1").strip().lower()
    if switch in ("0", "off", "false", "no"):
        return None
    if switch not in ("1", "on", "true", "yes", ""):
        raise ValueError(f"{ENV_STACKS} must be 1 or 0 (on or off), got {switch!r}")
    raw = env.get(ENV_STALL_MS, "").strip()
    if not raw:
        return DEFAULT_STALL_S
    try:
        millis = float(raw)
    except ValueError:
        millis = -1.0
    if not 0 < millis < 3_600_000:
        raise ValueError(f"{ENV_STALL_MS} must be a positive number of milliseconds, got {raw!r}")
    return millis / 1000


def next_sample_at(now: float, since: float) -> float:
    """When to sample a stall again: every SAMPLE_S at first, then every (time stalled / THIN),
    so a stall of a minute is sampled a few hundred times, not twelve thousand."""
    return now + max(SAMPLE_S, (now - since) / THIN)


@dataclass
class _Stall:
    #: The loop's last stamp before it stalled: the stall lasts while the stamp stays.
    since: float
    next_sample: float
    counts: dict[Stack, int] = field(default_factory=dict)
    samples: int = 0
    #: Per stack: [seconds of the stall it stands for, seconds the loop thread ran, seconds
    #: it slept (neither running nor waiting for a CPU), seconds those two were measured,
    #: seconds of the first it held the loop (less the process's waits for a CPU)].
    times: dict[Stack, list[float]] = field(default_factory=dict)
    #: The last sample: when, its stack, and the loop thread's (run, wait) ns then.
    last_at: float | None = None
    last_stack: Stack | None = None
    last_clock: Clock | None = None
    #: (the loop thread's run, every thread's wait for a CPU) in nanoseconds when the loop
    #: was last healthy.
    sched: Clock | None = None
    #: Seconds that reading was taken before the stall began (0: at or after it): the
    #: figures measured from it hold that much of the time before the stall too.
    lead_s: float = 0.0
    #: CPU seconds the sampler itself spent on this stall (it holds the GIL meanwhile).
    sampler_s: float = 0.0


class StallWatch:
    """The watchdog thread and the stalls it has summarised since the last `clear()`."""

    def __init__(
        self,
        threshold_s: float,
        tick_s: float,
        *,
        boundary: types.CodeType | None = None,
        gc_watch: GcWatch | None = None,
    ) -> None:
        self.threshold_s = threshold_s
        #: The process's garbage collections: each stall says how much of it they were.
        self.gc_watch = gc_watch
        self.tick_s = tick_s
        #: Written by the loop thread on every tick (a float store: atomic under the GIL).
        self.stamp = time.perf_counter()
        #: Stacks stop (exclusive) at a frame running this code: the server machinery
        #: outside the probe says nothing about the app.
        self._boundary = boundary
        self._poll_s = min(max(threshold_s / 2, 0.001), 0.05)
        self._lock = threading.Lock()
        self._stall: _Stall | None = None
        self._finished: list[dict[str, Any]] = []
        self._thread_id: int | None = None
        self._native_id: int | None = None
        #: (when, the loop thread's scheduler times) at the watchdog's last healthy wake-ups.
        self._readings: deque[tuple[float, Clock | None]] = deque(maxlen=READINGS)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._callees: dict[tuple[types.CodeType, int], str | None] = {}
        #: The loop thread's CPU clock (where /proc is absent).
        self._cpu_clock: int | None = None
        #: The watchdog thread's CPU clock, and its CPU seconds as of its last wake-up (read
        #: where the clock is absent).
        self._own_clock: int | None = None
        self._own_cpu_s = 0.0
        #: The process's threads' scheduler times, read from files kept open.
        self._schedstats = SchedStats()

    # ---- the loop thread's side ----------------------------------------------

    def start(self, loop_thread_id: int) -> None:
        """Watch `loop_thread_id` (call from the loop thread, once)."""
        if self._thread is not None:
            return
        self._thread_id = loop_thread_id
        self._native_id = threading.get_native_id()
        self._cpu_clock = _cpu_clock_of(loop_thread_id)
        self.stamp = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="fanout-stallwatch", daemon=True)
        self._thread.start()

    @property
    def watchdog_tid(self) -> int | None:
        """The watchdog thread's kernel id (None before `start`): the harness's own thread,
        whose waits for a CPU are not the app's."""
        return None if self._thread is None else self._thread.native_id

    def cpu_s(self) -> float:
        """The watchdog thread's CPU seconds so far: the harness's cost, not the app's, so the
        probe takes it off the app's CPU (its background grew with wall time, so the same code
        read 3 ms a request at a 20 ms upstream delay and 58 ms at 2 s). Exact from the thread's
        CPU clock; where there is none, as of its last wake-up."""
        if self._own_clock is not None:
            try:
                return time.clock_gettime(self._own_clock)
            except OSError:  # the thread has ended: its last reading is all it spent
                self._own_clock = None
        return self._own_cpu_s

    def stop(self) -> None:
        self._stopped = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self._schedstats.close()

    def stalls(self) -> list[dict[str, Any]]:
        """The summarised stalls, longest first. Called on the loop thread, which is running,
        so a stall the watchdog has not closed yet is over: close it now."""
        with self._lock:
            if self._stall is not None:
                now = time.perf_counter()
                self._finish(self._stall, self.stamp, now)
                self.stamp = now  # the loop runs: the watchdog must not reopen that stall
            return [dict(s) for s in self._finished]

    def clear(self) -> None:
        """Forget every stall (call from the loop thread, which is running)."""
        with self._lock:
            self._stall = None
            self._finished = []
            self.stamp = time.perf_counter()

    # ---- the watchdog thread ---------------------------------------------------

    def _run(self) -> None:
        self._own_clock = _cpu_clock_of(threading.get_ident())
        limit = self.tick_s + self.threshold_s
        while not self._stopped:
            stamp = self.stamp
            now = time.perf_counter()
            with self._lock:
                stall = self._stall
                if stall is not None and stall.since != stamp:
                    self._finish(stall, stamp, now)
                    stall = None
                if now - stamp > limit:
                    if stall is None:
                        taken, baseline = self._baseline(stamp)
                        stall = self._stall = _Stall(
                            since=stamp,
                            next_sample=now,
                            sched=baseline,
                            last_clock=baseline,
                            lead_s=max(0.0, stamp + self.tick_s - taken),
                        )
                    if now >= stall.next_sample and stall.samples < MAX_SAMPLES:
                        self._sample(stall, now)
                        stall.next_sample = next_sample_at(now, stamp)
            if stall is None:
                clock = self._loop_clock()
                self._readings.append((time.perf_counter(), clock))  # taken by then
            # Healthy: sleep until this stamp would be too old (about every threshold; a
            # fresh stamp sends the thread back to sleep). Stalled: until the next sample.
            wake = stamp + limit if stall is None else min(stall.next_sample, now + self._poll_s)
            self._own_cpu_s = time.thread_time()
            time.sleep(max(0.001, wake - time.perf_counter()))  # the watchdog's period

    def _baseline(self, since: float) -> tuple[float, Clock | None]:
        """The loop thread's scheduler times when a stall whose last stamp is `since` began
        (`since + tick`): the latest healthy reading taken by then, else the oldest kept.

        The watchdog calls the loop healthy while its stamp is younger than tick + threshold,
        so its last healthy reading can come up to a threshold after the stall began. Measured
        from there, the stall's start was in `duration_s` but not in `ran_s` or `starved_s`,
        and `stall_held_s` called it held: on a busy runner, the loop's wait for a CPU read as
        ~20 ms of the app's code holding it (a healthy fan-out, field run beside CPU hogs).
        Returns (when it was taken, the times)."""
        began = since + self.tick_s
        before = [reading for reading in self._readings if reading[0] <= began]
        if before:
            return before[-1]
        return self._readings[0] if self._readings else (began, None)

    def _sample(self, stall: _Stall, now: float) -> None:
        frame = sys._current_frames().get(self._thread_id or 0)
        if frame is None or self.stamp != stall.since:
            return  # the loop ran again meanwhile: this stack is not the stall's
        spent = time.thread_time()
        try:
            stack = self._stack_of(frame)
            clock = self._loop_clock()
            asleep = self._loop_asleep()
        finally:
            del frame
            stall.sampler_s += time.thread_time() - spent
        if self.gc_watch is not None and self.gc_watch.running:
            stack = (*stack, (BUILTIN_FILE, 0, GC_FUNCTION))
        stall.samples += 1
        if stack in stall.counts:
            stall.counts[stack] += 1
        elif len(stall.counts) < MAX_DISTINCT:
            stall.counts[stack] = 1
        self._weigh(stall, stack, now, clock, asleep)

    def _weigh(
        self,
        stall: _Stall,
        stack: Stack,
        now: float,
        clock: Clock | None,
        asleep: bool = True,
    ) -> None:
        """Give `stack` the time since the previous sample (the first: since the stall
        began, which it was most likely in already), so the stall is blamed on the place
        that held it longest, not on the one sampled most by chance; and, where the same
        stack was caught at both ends, whether the loop thread ran or slept meanwhile."""
        start = stall.since + self.tick_s if stall.last_at is None else stall.last_at
        span = max(0.0, now - start)
        times = stall.times.get(stack)
        if times is None and stack in stall.counts:
            times = stall.times[stack] = [0.0, 0.0, 0.0, 0.0, 0.0]
        if times is not None:
            times[0] += span
            held = span
            if clock is not None and stall.last_clock is not None:
                ran = max(0.0, (clock[0] - stall.last_clock[0]) / 1e9)
                queued = max(0.0, (clock[1] - stall.last_clock[1]) / 1e9)
                own = max(0.0, (clock[2] - stall.last_clock[2]) / 1e9)
                # Code that ran held the loop for the CPU it used (its waits for a CPU or
                # the GIL are the runner's: they swell with the load); code that barely
                # ran and is asleep now waited in a call (a sleep, a read) for the wall
                # time, less the loop thread's own waits for a CPU (other threads' waits
                # while it slept took nothing from it). Runnable now but barely ran: a
                # wait for a CPU the kernel has not counted yet (it counts at the end).
                waited = asleep and ran <= CPU_SHARE * span
                held = span - min(span, own) if waited else min(ran, span)
                if stall.last_stack == stack:
                    times[1] += ran
                    times[2] += max(0.0, span - ran - queued) if asleep else 0.0
                    times[3] += span
            times[4] += held
        stall.last_at, stall.last_stack, stall.last_clock = now, stack, clock

    def _loop_asleep(self) -> bool:
        """True when the loop thread is asleep (in a wait: a sleep, a read, a lock), False
        when it is running or waiting for a CPU (/proc state R); True where /proc is absent."""
        if self._native_id is None:
            return True
        try:
            with open(f"/proc/self/task/{self._native_id}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return True
        return state != b"R"

    def _loop_clock(self) -> Clock | None:
        """`_sched` (/proc); else the loop thread's CPU clock and no waits; None where
        neither is."""
        sched = self._sched()
        if sched is not None or self._cpu_clock is None:
            return sched
        try:
            return time.clock_gettime_ns(self._cpu_clock), 0, 0, 0
        except OSError:
            return None

    def _finish(self, stall: _Stall, resumed: float, now: float) -> None:
        """Summarise `stall` (the loop stamped again at `resumed`, or not yet: then `now`)."""
        self._stall = None
        end = resumed if resumed != stall.since else now
        duration = max(0.0, end - stall.since - self.tick_s)
        if stall.last_stack is not None and stall.last_stack in stall.times:
            # The rest of the stall, after its last sample, is the last stack's.
            rest = max(0.0, end - (stall.last_at or end))
            stall.times[stall.last_stack][0] += rest
            stall.times[stall.last_stack][4] += rest
        none = [0.0, 0.0, 0.0, 0.0, 0.0]

        def weight(item: tuple[Stack, int]) -> tuple[float, int]:
            times = stall.times.get(item[0], none)
            return (times[4], item[1])

        top = sorted(stall.counts.items(), key=weight, reverse=True)[:TOP_STACKS]
        stacks = []
        for stack, count in top:
            seen, ran, slept, measured, held = stall.times.get(stack, none)
            entry: dict[str, Any] = {
                "count": count,
                "frames": [{"file": f, "line": n, "function": fn} for f, n, fn in stack],
                "seen_s": round(seen, 6),
                "held_s": round(held, 6),
            }
            if measured > 0:
                entry["ran_s"] = round(ran, 6)
                entry["slept_s"] = round(slept, 6)
            stacks.append(entry)
        summary: dict[str, Any] = {
            "duration_s": round(duration, 6),
            "samples": stall.samples,
            "stacks": stacks,
        }
        if self.gc_watch is not None:
            collections = self.gc_watch.within(stall.since, end)
            collections["gc_s"] = round(min(duration, collections["gc_s"]), 6)
            summary.update(collections)
        after = self._sched()
        if stall.sched is not None and after is not None:
            # The kernel adds a wait for a CPU when it ends: the loop runs again, so it is in.
            summary["ran_s"] = round(min(duration, (after[0] - stall.sched[0]) / 1e9), 6)
            summary["starved_s"] = round(min(duration, (after[1] - stall.sched[1]) / 1e9), 6)
            # The loop thread's own waits, and the CPU of the app's other threads: one that
            # holds the GIL (a C call in a thread pool) holds the loop for as long as it runs.
            summary["waited_s"] = round(min(duration, (after[2] - stall.sched[2]) / 1e9), 6)
            others = max(0.0, (after[3] - stall.sched[3]) / 1e9)
            summary["others_ran_s"] = round(min(duration, others), 6)
            summary["lead_s"] = round(stall.lead_s, 6)
        summary["sampler_s"] = round(min(duration, stall.sampler_s), 6)
        kept = self._finished
        kept.append(summary)
        kept.sort(key=lambda s: s["duration_s"], reverse=True)
        del kept[MAX_STALLS:]

    def _sched(self) -> Clock | None:
        """(nanoseconds the loop thread ran, nanoseconds every thread of the process waited
        for a CPU, nanoseconds the loop thread itself waited, nanoseconds the app's other
        threads ran) from /proc (Linux), or None. Every thread's waits count in the second:
        a thread preempted while it holds the GIL stalls the loop as surely as the loop's own
        wait. The watchdog's own CPU is in none of them."""
        if self._native_id is None:
            return None
        stats = self._schedstats.read()
        loop = None if stats is None else stats.get(str(self._native_id))
        if stats is None or loop is None:
            return None
        skip = {str(self._native_id), str(self.watchdog_tid)}
        others = sum(run for tid, (run, _) in stats.items() if tid not in skip)
        return loop[0], sum(wait for _, wait in stats.values()), loop[1], others

    def _stack_of(self, frame: types.FrameType) -> Stack:
        """(file, line, qualified function) from the innermost frame outwards, innermost last;
        plus a pseudo-frame naming the C function the innermost frame is inside, if any."""
        frames: list[Frame] = []
        callee = self._callee(frame)
        if callee is not None:
            frames.append((BUILTIN_FILE, 0, callee))
        current: types.FrameType | None = frame
        while current is not None and len(frames) < MAX_DEPTH:
            code = current.f_code
            if code is self._boundary:
                break
            frames.append((code.co_filename, current.f_lineno or 0, code.co_qualname))
            current = current.f_back
        frames.reverse()
        return tuple(frames)

    def _callee(self, frame: types.FrameType) -> str | None:
        """The C function `frame` is calling right now (time.sleep, a socket read), or None
        when it is running its own bytecode (a CPU loop)."""
        key = (frame.f_code, frame.f_lasti)
        if key in self._callees:
            return self._callees[key]
        name = _call_at(frame)
        if len(self._callees) >= _CALLEE_CACHE_MAX:
            self._callees.clear()
        self._callees[key] = name
        return name


def _cpu_clock_of(thread_id: int) -> int | None:
    """The CPU clock of a thread of this process (`time.clock_gettime` reads it), or None
    where the platform has none."""
    try:
        return time.pthread_getcpuclockid(thread_id)
    except (AttributeError, OSError):
        return None


def _call_at(frame: types.FrameType) -> str | None:
    """The call `frame` is in, read off its de-specialised bytecode: the instruction at
    f_lasti, or the one whose inline CACHE entries f_lasti points into (3.11+)."""
    code, offset = frame.f_code, frame.f_lasti
    current = None
    for instruction in dis.get_instructions(code, adaptive=False):
        if instruction.offset > offset:
            break
        current = instruction
    if current is None or current.opname not in _CALL_OPS:
        return None
    return _callee_name(code.co_filename, current.positions, frame)


def _callee_name(filename: str, positions: Any, frame: types.FrameType) -> str:
    """The called expression as the source spells it (`time.sleep`), with a module alias or a
    name imported from a module resolved through the frame's globals (never its locals)."""
    text = ""
    if positions is not None and positions.lineno is not None:
        lines = [
            linecache.getline(filename, n)
            for n in range(positions.lineno, (positions.end_lineno or positions.lineno) + 1)
        ]
        if lines and positions.col_offset is not None:
            lines[0] = lines[0][positions.col_offset :]
        text = "".join(line.strip() for line in lines)
    dotted = text.split("(", 1)[0].strip()
    if not dotted or not all(part.isidentifier() for part in dotted.split(".")):
        return "a C function"
    head, _, rest = dotted.partition(".")
    target = frame.f_globals.get(head)
    if target is None:
        target = frame.f_builtins.get(head)
    if isinstance(target, types.ModuleType):
        return target.__name__ + ("." + rest if rest else "")
    if isinstance(target, types.BuiltinFunctionType) and not rest:
        module = target.__module__
        if module in (None, "builtins"):
            return target.__qualname__
        return f"{module}.{target.__name__}"
    if target is not None and rest and "." not in rest and not isinstance(target, type):
        # A method of a module-level object (`_LOCK.acquire`): named by its type too.
        kind = type(target)
        return f"{dotted} ({kind.__module__}.{kind.__qualname__}.{rest})"
    return dotted
