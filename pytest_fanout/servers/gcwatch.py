"""Garbage collections in the app's process, timed: a stall's cause of its own.

When many answers arrive together, parsing them allocates fast and CPython's
cyclic collector runs; a generation-2 collection of a large heap holds the
event loop for tens of milliseconds. The loop probe would otherwise report
that as "blocking code" at whatever line happened to allocate. `gc.callbacks`
(the documented hook: called with "start" and "stop" around every collection,
with the generation and the objects collected) gives each collection's
interval, so a stall can say how much of it was garbage collection.

Bounded: the last MAX_KEPT collections are kept (a deque), and the callback
does two clock reads and an append.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

#: Collections kept (the newest): far more than one request's stalls can span.
MAX_KEPT = 4096

# (start, end, generation, objects collected): perf_counter seconds.
Collection = tuple[float, float, int, int]


class GcWatch:
    """Records every collection of this process while installed."""

    def __init__(self) -> None:
        self.collections: deque[Collection] = deque(maxlen=MAX_KEPT)
        self._started: dict[int, float] = {}
        #: Totals since the last reset: seconds in collections, count, worst generation.
        self.total_s = 0.0
        self.count = 0
        self.max_generation = -1
        #: True while a collection runs (read by the stack sampler: a sample taken then is
        #: the collector's, whatever line allocated).
        self.running = False
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def reset(self) -> None:
        self.total_s, self.count, self.max_generation = 0.0, 0, -1

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        thread = threading.get_ident()
        if phase == "start":
            self._started[thread] = now
            self.running = True
            return
        self.running = False
        start = self._started.pop(thread, None)
        if start is None:
            return
        generation = int(info.get("generation", 0))
        self.collections.append((start, now, generation, int(info.get("collected", 0))))
        self.total_s += now - start
        self.count += 1
        self.max_generation = max(self.max_generation, generation)

    def within(self, start: float, end: float) -> dict[str, Any]:
        """The collections overlapping [start, end]: seconds inside it, count, the highest
        generation, objects collected."""
        return summarise(list(self.collections), start, end)


def summarise(collections: Iterable[Collection], start: float, end: float) -> dict[str, Any]:
    seconds, count, generation, collected = 0.0, 0, -1, 0
    for c_start, c_end, c_generation, c_collected in collections:
        overlap = min(end, c_end) - max(start, c_start)
        if overlap <= 0:
            continue
        seconds += overlap
        count += 1
        generation = max(generation, c_generation)
        collected += c_collected
    return {
        "gc_s": round(seconds, 6),
        "gc_collections": count,
        "gc_generation": generation,
        "gc_collected": collected,
    }
