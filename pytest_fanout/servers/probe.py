"""The loop probe: wraps the app under test inside its own process.

An event-loop lag monitor (a task that asks to wake every few milliseconds
and records how late it woke), the process's CPU time, an in-flight request
counter, and the blocking stacks. A sync call inside `async def` holds the
loop, so the monitor wakes late by about as long as the call took: that is
how the harness catches blocking; meanwhile a watchdog thread
(`stallwatch.StallWatch`) samples the stack that holds the loop, so the
harness can say where. Read with `GET /__fanout__/probe` (`stalls_detail`
lists the stalls, longest first), zeroed with `POST /__fanout__/probe`. The
path exists only when the harness wraps the app, never in the app as users
deploy it.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from pytest_fanout.servers.gcwatch import GcWatch
from pytest_fanout.servers.proctree import thread_schedstats
from pytest_fanout.servers.stallwatch import DEFAULT_STALL_S, StallWatch, stall_threshold_from_env

PROBE_PATH = "/__fanout__/probe"
#: The bearer token the probe's path asks for (set by the harness for each app it starts).
PROBE_TOKEN_ENV = "PYTEST_FANOUT_PROBE_TOKEN"
TICK_S = 0.005
#: Idle ticks kept to price one (the latest), and how many it takes before a price holds.
IDLE_TICKS = 256
MIN_IDLE_TICKS = 16
#: A tick that cost more than this many times the idle one (the median of the idle ticks
#: for the idle price; the idle price for a sample's own) also ran something else: a
#: garbage collection, or the app's work (a wave's answers), left out of the price. What
#: the loop does on its own between requests stays in: the server's timers (uvicorn's
#: wakes ten times a second; its ticks cost 1.5 to 2.8 times a bare one here). With them
#: left out (at 1.5 and 2 times), their share stayed in the app's CPU, about 0.5 ms a
#: second, so the same code read more the longer it waited on upstreams.
TICK_OUTLIER = 3.0
#: The longest `GET PROBE_PATH?price=1` waits for MIN_IDLE_TICKS new idle ticks.
PRICE_WAIT_S = 1.0
#: A sample's own quiet ticks (no request began or ended), those within TICK_OUTLIER of the
#: idle price: with at least MIN_OWN_TICKS of them, their mean prices the sample's ticks (a
#: long wait on upstreams: its ticks cost less than the idle price taken right after a
#: request, ~70 against ~88 us here), else the idle price does.
MIN_OWN_TICKS = 8
#: A sample's quiet ticks kept (a sample of a minute has 12,000): the first ones.
OWN_TICKS = 4096
#: A wake-up later than this counts as a stall in `stalls` (PYTEST_FANOUT_STALL_MS sets it).
STALL_S = DEFAULT_STALL_S


@dataclass
class ProbeStats:
    requests: int = 0
    inflight: int = 0
    #: Requests whose handling was cancelled (an app that stops a request when its client
    #: hangs up): they may have made only part of their upstream calls.
    cancelled: int = 0
    peak_inflight: int = 0
    loop_lag_max_s: float = 0.0
    stalls: int = 0
    ticks: int = 0
    #: CPU seconds this process used since the last reset (all threads; microsecond
    #: resolution), less the stall watch's thread (the harness's, not the app's): the app's
    #: own cost of what it served meanwhile.
    cpu_s: float = 0.0
    #: The same with the stall watch's thread and the monitor's ticks in: what the process
    #: as a whole spent (`benchmarks/probe_cost.py` weighs the sampler with it).
    process_cpu_s: float = 0.0
    #: The loop thread's CPU the monitor's ticks cost since the reset, taken off `cpu_s`:
    #: the ticks counted at the price of an idle tick (`tick_price_s`). None until enough
    #: idle ticks priced it: then `cpu_s` still holds the ticks.
    tick_cpu_s: float | None = None
    #: The loop thread's CPU one tick of the monitor costs while nothing else runs (the wake
    #: from the selector, the tick, the server's own timers), measured in this process.
    tick_price_s: float | None = None
    #: Seconds this process's threads waited for a CPU since the last reset (the kernel's
    #: run-queue time, /proc/self/task/*/schedstat): what a busy machine, not the code, added
    #: to the wall time. None where /proc does not say (not Linux): never a made-up 0.
    wait_s: float | None = None
    #: Garbage collections in this process since the last reset: seconds, count, and the
    #: highest generation collected (-1: none).
    gc_s: float = 0.0
    gc_collections: int = 0
    gc_max_generation: int = -1
    #: Threads alive in this process at the last reset, and the most at a tick since.
    threads_start: int = 0
    threads_peak: int = 0


class LoopProbe:
    """ASGI middleware: serves PROBE_PATH itself and passes everything else to `app`."""

    def __init__(self, app: Any, tick_s: float = TICK_S) -> None:
        """Raises ValueError (one line) for a PYTEST_FANOUT_STACKS/_STALL_MS it cannot use."""
        self.app = app
        self.tick_s = tick_s
        self.stats = ProbeStats()
        self._wait_at_reset = run_queue_waits()
        token = os.environ.get(PROBE_TOKEN_ENV, "")
        self._authorization = f"Bearer {token}".encode() if token else None
        self._monitor: asyncio.Task[None] | None = None
        #: When the monitor's next tick is due: the loop is late by now - _due.
        self._due = time.perf_counter() + tick_s
        threshold = stall_threshold_from_env()
        self.stall_s = STALL_S if threshold is None else threshold
        #: The process's garbage collections (gc.callbacks), installed with the monitor.
        self.gc_watch = GcWatch()
        #: The stack sampler; None when switched off (PYTEST_FANOUT_STACKS=0).
        self.stall_watch = (
            None
            if threshold is None
            else StallWatch(
                threshold,
                tick_s,
                boundary=LoopProbe.__call__.__code__,
                gc_watch=self.gc_watch,
            )
        )
        self._cpu_at_reset = self._cpu_now()
        #: The loop thread's CPU at the monitor's last tick; whether nothing but the monitor
        #: ran since (no request began or ended, no probe read); the CPU of the latest idle
        #: ticks (their price: what a tick costs the loop when it has nothing else); and
        #: how many were ever taken, for `?price=1` to wait for new ones.
        self._tick_cpu = 0.0
        self._quiet = False
        self._idle_ticks: deque[float] = deque(maxlen=IDLE_TICKS)
        self._idle_count = 0
        self._priced: tuple[int, asyncio.Event] | None = None
        #: This sample's quiet ticks (no request began or ended, none read the probe).
        self._own_ticks: list[float] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self._quiet = False
        if self._monitor is None:
            self._due = time.perf_counter() + self.tick_s
            self._monitor = asyncio.get_running_loop().create_task(self._watch_loop())
        if scope["type"] == "http" and scope["path"] == PROBE_PATH:
            if not self._authorized(scope):
                await _answer(send, 403, b'{"detail":"the probe needs the harness\'s token"}')
                return
            await self._serve(scope, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stats = self.stats
        stats.requests += 1
        stats.inflight += 1
        stats.peak_inflight = max(stats.peak_inflight, stats.inflight)
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        finally:
            self.stats.inflight -= 1
            self._quiet = False

    async def _watch_loop(self) -> None:
        self.gc_watch.install()
        watch = self.stall_watch
        if watch is not None:
            watch.start(threading.get_ident())
        self._tick_cpu = time.thread_time()
        while True:
            self._due = time.perf_counter() + self.tick_s
            await asyncio.sleep(self.tick_s)
            now = time.perf_counter()
            if watch is not None:
                watch.stamp = now
            lag = now - self._due
            stats = self.stats
            cpu = time.thread_time()
            spent = cpu - self._tick_cpu
            if self._quiet and len(self._own_ticks) < OWN_TICKS:
                self._own_ticks.append(spent)
            if self._quiet and stats.inflight == 0:
                self._idle_ticks.append(spent)
                self._idle_count += 1
                if self._priced is not None and self._idle_count >= self._priced[0]:
                    self._priced[1].set()
            self._tick_cpu, self._quiet = cpu, True
            stats.ticks += 1
            threads = threading.active_count()
            if threads > stats.threads_peak:
                stats.threads_peak = threads
            if lag > stats.loop_lag_max_s:
                stats.loop_lag_max_s = lag
            if lag > self.stall_s:
                stats.stalls += 1

    def tick_price_s(self) -> float | None:
        """What one tick costs the loop thread when nothing else runs: the mean of the latest
        idle ticks (outliers left out), or None before MIN_IDLE_TICKS of them. A tick is
        idle when no request was in flight and none began or ended, and no probe was read,
        since the one before: the loop did nothing but tick.

        Its ticks are CPU the app spends because the harness watches it, and they grow with
        wall time: ~17 ms a second here, so the same code read 3 ms a request at a 20 ms
        upstream delay and 36 ms at 2 s. Priced in this process, at this processor's speed
        (`?price=1` takes new ones), and taken off `cpu_s` per tick counted. Only idle ticks
        price it: a tick during a fan-out's waves often shares its 5 ms with the app's work,
        and priced from those, a path of 7 waves 10 ms apart read 14 ms of CPU for 22. A tick
        while the loop is busy costs less (no wake of its own), so the price takes off at
        most one idle tick too many per 5 ms of the app's own CPU: about 2% of it."""
        idle = self._idle_ticks
        if len(idle) < MIN_IDLE_TICKS:
            return None
        limit = statistics.median(idle) * TICK_OUTLIER
        return statistics.fmean(cost for cost in idle if cost <= limit)

    def sample_tick_price_s(self) -> float | None:
        """The price of this sample's ticks: the mean of its own clean ticks (quiet, at most
        TICK_OUTLIER times the idle price) when it has MIN_OWN_TICKS of them, else the idle
        price (`tick_price_s`); None without one. A tick of a fan-out's waves that also ran
        the app's work costs more than that and is left out; one that ran under
        (TICK_OUTLIER - 1) idle prices of work with it is taken for a tick."""
        idle = self.tick_price_s()
        if idle is None:
            return None
        clean = [cost for cost in self._own_ticks if cost <= idle * TICK_OUTLIER]
        return statistics.fmean(clean) if len(clean) >= MIN_OWN_TICKS else idle

    async def _take_price(self) -> None:
        """Wait (at most PRICE_WAIT_S) until the monitor has taken MIN_IDLE_TICKS new idle
        ticks: the harness asks before a measurement's timed samples, so every sample is
        priced, at the processor's speed of now. The loop does nothing else meanwhile (this
        request is not in flight, and waits on an event the tick sets)."""
        if self._monitor is None:
            return
        event = asyncio.Event()
        self._priced = (self._idle_count + MIN_IDLE_TICKS, event)
        try:
            await asyncio.wait_for(event.wait(), PRICE_WAIT_S)
        except TimeoutError:
            pass  # a loop never idle (a background task): the price stays as it was
        finally:
            self._priced = None

    def _cpu_now(self) -> tuple[float, float]:
        """(the process's CPU seconds, the stall watch thread's share of them)."""
        harness = 0.0 if self.stall_watch is None else self.stall_watch.cpu_s()
        return time.process_time(), harness

    def _watchdog(self) -> int | None:
        return None if self.stall_watch is None else self.stall_watch.watchdog_tid

    def _authorized(self, scope: dict) -> bool:
        if self._authorization is None:
            return True
        return (b"authorization", self._authorization) in scope["headers"]

    async def _serve(self, scope: dict, send: Any) -> None:
        if scope["method"] == "GET" and b"price=1" in scope.get("query_string", b""):
            await self._take_price()
        now = time.perf_counter()
        if scope["method"] == "POST":
            # Keep the in-flight count: requests still running must be able to finish it.
            threads = threading.active_count()
            self.stats = ProbeStats(
                inflight=self.stats.inflight, threads_start=threads, threads_peak=threads
            )
            self.stats.peak_inflight = self.stats.inflight
            self._cpu_at_reset = self._cpu_now()
            self._own_ticks = []
            self._wait_at_reset = run_queue_waits(self._watchdog())
            # A tick overdue from before the reset must not carry its lag into the new sample.
            self._due = max(self._due, now)
            if self.stall_watch is not None:
                self.stall_watch.clear()
            self.gc_watch.reset()
        elif now - self._due > self.stats.loop_lag_max_s:
            # The loop can serve this before the overdue tick has run: count the lag now.
            self.stats.loop_lag_max_s = now - self._due
        process, harness = self._cpu_now()
        stats = self.stats
        stats.process_cpu_s = process - self._cpu_at_reset[0]
        stats.cpu_s = stats.process_cpu_s - (harness - self._cpu_at_reset[1])
        price = stats.tick_price_s = self.sample_tick_price_s()
        if price is not None:
            stats.tick_cpu_s = min(stats.cpu_s, stats.ticks * price)
            stats.cpu_s -= stats.tick_cpu_s
        self.stats.wait_s = waited_since(self._wait_at_reset, run_queue_waits(self._watchdog()))
        gc_watch = self.gc_watch
        self.stats.gc_s = round(gc_watch.total_s, 6)
        self.stats.gc_collections = gc_watch.count
        self.stats.gc_max_generation = gc_watch.max_generation
        data: dict[str, Any] = asdict(self.stats)
        data["stalls_detail"] = [] if self.stall_watch is None else self.stall_watch.stalls()
        await _answer(send, 200, json.dumps(data).encode())


def run_queue_waits(skip: int | None = None) -> dict[str, int] | None:
    """Per thread of this process but `skip` (the harness's watchdog), the nanoseconds it has
    waited on a run queue, or None when /proc does not say (not Linux, no schedstat).
    /proc/self/schedstat alone counts the main thread only."""
    stats = thread_schedstats()
    waits = {tid: wait for tid, (_, wait) in (stats or {}).items() if tid != str(skip)}
    return waits or None


def waited_since(before: dict[str, int] | None, after: dict[str, int] | None) -> float | None:
    """Seconds the threads waited for a CPU between two `run_queue_waits()` readings: a
    thread started since counts from 0; one ended since is lost (its wait cannot be read
    any more). None when either reading is."""
    if before is None or after is None:
        return None
    total = 0
    for tid, now in after.items():
        then = before.get(tid, 0)
        total += now - then if now >= then else now  # a reused thread id: a new thread
    return round(total / 1e9, 9)


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
