"""The injected slowdown (FANOUT_CALL_OVERHEAD_MS): CPU burnt per upstream call.

It exists only to validate the regression gate (benchmarks/gate_validation.py
plants a known regression with it). It wraps whatever transport a client has,
or, on the aiohttp engine, every call of its session (a public aiohttp client
middleware, so the gathered routes' direct calls pay it too), so the
strategies and the routes stay exactly the code a user would copy; at 0 ms
(the default) nothing is wrapped.
"""

from __future__ import annotations

import time

import aiohttp
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


def slowed_session(overhead_ms: float) -> tuple[aiohttp.ClientMiddlewareType, ...]:
    """The aiohttp session's middlewares: none at 0 ms, else one that burns `overhead_ms`
    once the upstream has answered, on every call of the session."""
    if overhead_ms <= 0:
        return ()
    overhead_s = overhead_ms / 1000

    async def slow(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        response = await handler(request)
        burn_cpu(overhead_s)
        return response

    return (slow,)
