"""What the app's guards cost a request: admission control and the deadline, in this process.

The reference app keeps both on every fan-out (app/admission.py, app/fanout.py):
a request reserves its n calls (`Admission.admit`, then `release`) and its
gather runs under `asyncio.timeout`. Each is timed here in a loop (CPU time,
best of three), on uvloop like the app, and the bench states it per request
and as a share of the app's CPU for one /async/1000.
"""

from __future__ import annotations

import asyncio
import time

from app.admission import Admission

ROUNDS = 20_000
N = 1000


def _admission_us() -> float:
    admission = Admission(max_pending_calls=4 * N, deadline_s=30.0)
    start = time.process_time()
    for _ in range(ROUNDS):
        ticket = admission.admit(N)
        assert ticket is not None
        ticket.remaining_s()
        admission.release(ticket)
    return 1e6 * (time.process_time() - start) / ROUNDS


async def _nothing() -> None:
    return None


async def _deadline_us() -> float:
    """asyncio.timeout around an await, less the same await bare."""
    start = time.process_time()
    for _ in range(ROUNDS):
        await _nothing()
    bare = time.process_time() - start
    start = time.process_time()
    for _ in range(ROUNDS):
        async with asyncio.timeout(30.0):
            await _nothing()
    return 1e6 * max(time.process_time() - start - bare, 0.0) / ROUNDS


def guard_costs() -> dict[str, float]:
    """CPU microseconds per request: {"admission": ..., "deadline": ...} (best of three)."""
    import uvloop

    return {
        "admission": min(_admission_us() for _ in range(3)),
        "deadline": min(uvloop.run(_deadline_us()) for _ in range(3)),
    }
