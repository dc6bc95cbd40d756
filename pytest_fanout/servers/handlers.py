"""Where a stub's sync route handlers run: a bounded thread pool, off the stub's loop.

A sync handler that blocks (a `time.sleep`, a lock, a slow computation) run on
the loop would serialise every other call and the control API, and the app
under test would look sequential. Run here, it blocks one of `MAX_THREADS`
threads; calls past that many wait their turn in order, and the loop keeps
answering. Async handlers stay on the loop (they are the test's to keep
non-blocking).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

#: Sync handler calls running at once in one stub process.
MAX_THREADS = 64

T = TypeVar("T")


class HandlerPool:
    """A lazily started `ThreadPoolExecutor` of at most `max_threads` threads."""

    def __init__(self, max_threads: int = MAX_THREADS) -> None:
        self.max_threads = max_threads
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a pool thread (with the caller's context), awaited."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.max_threads, "stub-handler")
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, context.run, function, *args)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
