"""The injected slowdown (FANOUT_CALL_OVERHEAD_MS): CPU burnt per upstream call.

It exists only to validate the regression gate (benchmarks/gate_validation.py
plants a known regression with it). It wraps whatever transport a client has,
so the strategies and the routes stay exactly the code a user would copy; at
0 ms (the default) nothing is wrapped.
"""

from __future__ import annotations

import time

import httpx2


def burn_cpu(seconds: float) -> None:
    """Spin for `seconds` of wall time on this thread (the event loop's, for async calls)."""
    if seconds <= 0:
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class SlowAsyncTransport(httpx2.AsyncBaseTransport):
    """`inner`, then `overhead_s` of CPU once the upstream has answered."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, overhead_s: float) -> None:
        self.inner = inner
        self.overhead_s = overhead_s

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        burn_cpu(self.overhead_s)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class SlowSyncTransport(httpx2.BaseTransport):
    """The same for a sync client."""

    def __init__(self, inner: httpx2.BaseTransport, overhead_s: float) -> None:
        self.inner = inner
        self.overhead_s = overhead_s

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        burn_cpu(self.overhead_s)
        return response

    def close(self) -> None:
        self.inner.close()


def slowed_async(
    transport: httpx2.AsyncBaseTransport, overhead_ms: float
) -> httpx2.AsyncBaseTransport:
    """`transport` itself at 0 ms, else wrapped to burn `overhead_ms` per call."""
    return SlowAsyncTransport(transport, overhead_ms / 1000) if overhead_ms > 0 else transport


def slowed_sync(transport: httpx2.BaseTransport, overhead_ms: float) -> httpx2.BaseTransport:
    """The same for a sync client's transport."""
    return SlowSyncTransport(transport, overhead_ms / 1000) if overhead_ms > 0 else transport
