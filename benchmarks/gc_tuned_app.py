"""The reference app plus the GC tuning proposed for app/main.py's lifespan (not shipped).

A 1000-wide fan-out keeps ~100 GC-tracked objects alive per call in flight
(coroutine frames, tasks, httpx and aiohttp request objects), so CPython's
default thresholds (700, 10, 10) run ~110 young and ~10 middle collections and
one FULL collection of the whole heap per /async/1000: ~30% of the app's CPU per
upstream call. The proposal, once the startup heap is built:

    gc.freeze()                          # the startup heap lives forever: never scan it
    gc.set_threshold(50_000, 20, 20)     # collect young objects ~70x less often

benchmarks/physical_limit.py measures this module next to the shipped app, so
the gain (or its absence) is in the same table.
"""

from __future__ import annotations

import gc
from typing import Any

from app.main import create_app

#: The proposed thresholds (generation 0, 1, 2).
THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze what startup built and raise the young-generation threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


class TunedAfterStartup:
    """ASGI wrapper: applies `tune_gc()` once the wrapped app's lifespan startup completed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_then_tune(message: dict) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                tune_gc()

        await self.app(scope, receive, send_then_tune)


app = TunedAfterStartup(create_app())
