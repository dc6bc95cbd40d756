"""The two shared upstream clients, built once in the lifespan and never per request.

Building an `httpx.AsyncClient` costs tens of milliseconds (a new SSL context);
sharing one costs nothing. Its pool is sized from settings because httpx's
default of 100 connections would silently cap "unbounded" gather at 100.
"""

from __future__ import annotations

import asyncio

import httpx

from app.settings import Settings

#: A sync `def` route runs in Starlette's threadpool (40 threads): more connections are idle.
SYNC_POOL_SIZE = 40


class PoolBoundTransport(httpx.AsyncBaseTransport):
    """Lets at most `limit` requests into the wrapped transport at once.

    httpcore's pool does work per queued request for every released
    connection, so a gather far wider than the pool slows down quadratically;
    waiting on a semaphore instead costs nothing.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._slots = asyncio.Semaphore(limit)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self._slots:
            response = await self._inner.handle_async_request(request)
            await response.aread()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _async_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(
        max_connections=settings.pool_size,
        max_keepalive_connections=settings.pool_size,
    )
    if settings.transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        # aiohttp's connector queues waiters cheaply: no extra bound needed.
        return AiohttpTransport(limits=limits)
    return PoolBoundTransport(httpx.AsyncHTTPTransport(limits=limits), settings.pool_size)


def build_async_client(settings: Settings) -> httpx.AsyncClient:
    """The one `httpx.AsyncClient` of the process, on the configured transport."""
    return httpx.AsyncClient(
        transport=_async_transport(settings),
        timeout=httpx.Timeout(settings.call_timeout_s),
    )


def build_sync_client(settings: Settings) -> httpx.Client:
    """The one sync `httpx.Client`, for the sequential route and the blocking anti-pattern."""
    return httpx.Client(
        timeout=httpx.Timeout(settings.call_timeout_s),
        limits=httpx.Limits(
            max_connections=SYNC_POOL_SIZE, max_keepalive_connections=SYNC_POOL_SIZE
        ),
    )
