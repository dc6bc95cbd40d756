"""Worker threads for the sequential route, with the wait for one inside the deadline.

A `def` route waits for a thread of Starlette's pool (40) before it runs, and
that wait is counted by nothing: under a flood of `/sync/N` (200 clients) the
admitted requests queued behind each other and answered seconds after their
deadline. Here a request first takes one of `size` places (an asyncio
semaphore, fair, first come first served) within what is left of its
deadline, then runs in Starlette's threadpool (`run_in_threadpool`, public),
which has a thread free for it since the places are no more than its
threads. A request that finds no place in time gets `default` at its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


class DeadlineThreads:
    """At most `size` functions in threads at once; the wait for a place is bounded."""

    def __init__(self, size: int) -> None:
        self.places = asyncio.Semaphore(size)

    async def run(self, remaining_s: Callable[[], float], work: Callable[[], T], default: T) -> T:
        """`work()` in a thread if a place frees up within `remaining_s()`, else `default`."""
        try:
            async with asyncio.timeout(max(remaining_s(), 0)):
                await self.places.acquire()
        except TimeoutError:
            return default
        try:
            return await run_in_threadpool(work)
        finally:
            self.places.release()
