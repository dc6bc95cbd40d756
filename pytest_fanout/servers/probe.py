"""The loop probe: wraps the app under test inside its own process.

An event-loop lag monitor, the process's CPU time, (a task that asks to wake every few milliseconds
and records how late it woke) plus an in-flight request counter. A sync call
inside `async def` holds the loop, so the monitor wakes late by about as long
as the call took: that is how the harness catches blocking. Read with
`GET /__fanout__/probe`, zeroed with `POST /__fanout__/probe`. The path exists
only when the harness wraps the app, never in the app as users deploy it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

PROBE_PATH = "/__fanout__/probe"
TICK_S = 0.005
#: A wake-up later than this counts as a stall in `stalls`.
STALL_S = 0.020


@dataclass
class ProbeStats:
    requests: int = 0
    inflight: int = 0
    peak_inflight: int = 0
    loop_lag_max_s: float = 0.0
    stalls: int = 0
    ticks: int = 0
    #: CPU seconds this process used since the last reset (all threads; microsecond
    #: resolution): the app's own cost of what it served meanwhile.
    cpu_s: float = 0.0


class LoopProbe:
    """ASGI middleware: serves PROBE_PATH itself and passes everything else to `app`."""

    def __init__(self, app: Any, tick_s: float = TICK_S) -> None:
        self.app = app
        self.tick_s = tick_s
        self.stats = ProbeStats()
        self._cpu_at_reset = time.process_time()
        self._monitor: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch_loop())
        if scope["type"] == "http" and scope["path"] == PROBE_PATH:
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
        finally:
            self.stats.inflight -= 1

    async def _watch_loop(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.tick_s)
            lag = time.perf_counter() - start - self.tick_s
            stats = self.stats
            stats.ticks += 1
            if lag > stats.loop_lag_max_s:
                stats.loop_lag_max_s = lag
            if lag > STALL_S:
                stats.stalls += 1

    async def _serve(self, scope: dict, send: Any) -> None:
        if scope["method"] == "POST":
            # Keep the in-flight count: requests still running must be able to finish it.
            self.stats = ProbeStats(inflight=self.stats.inflight)
            self.stats.peak_inflight = self.stats.inflight
            self._cpu_at_reset = time.process_time()
        self.stats.cpu_s = time.process_time() - self._cpu_at_reset
        body = json.dumps(asdict(self.stats)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
