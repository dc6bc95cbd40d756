"""The app's upstream clients: built once in the lifespan, shared by every request.

The pattern to copy:

- ONE `httpx2.AsyncClient` for the whole process, made when the app starts
  and closed when it stops. A client built per request costs tens of
  milliseconds (a new SSL context) and opens new connections every time.
- Its pool sized from settings (FANOUT_POOL_SIZE): httpx2's default of 100
  connections would silently cap an "unbounded" gather at 100 in flight.
- A per-call timeout from settings (FANOUT_CALL_TIMEOUT_S) for connecting,
  sending and reading; the wait for a free pooled connection is bounded by
  the request's deadline instead (FANOUT_DEADLINE_S), since a wide fan-out
  queues on the pool by design.
- No cookies kept: one client serves every user, so a Set-Cookie from the
  upstream must not ride along on another user's calls.

What carries the bytes is a separate choice (FANOUT_TRANSPORT): aiohttp's
engine under the same client API (app/transport.py says why) or httpx2's own
pool. On aiohttp's engine the gathered routes call its `aiohttp.ClientSession`
directly (`Clients.session`): the same pool, without httpx2's request layer,
which costs more CPU per call than the whole aiohttp request.
FANOUT_CALL_OVERHEAD_MS wraps either (app/slowdown.py), only to validate the
regression gate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import aiohttp
import httpx2

from .queued import QueuedTransport
from .settings import Settings
from .slowdown import slowed_async, slowed_session, slowed_sync
from .transport import KEEPALIVE_EXPIRY_S, AiohttpTransport

#: A sync `def` route runs in Starlette's threadpool (40 threads): more connections are idle.
SYNC_POOL_SIZE = 40
#: Idle connections httpx2's own pool keeps. It checks every idle connection on each pool
#: operation, so keeping 1000 idle would cost milliseconds per call at 1000 in flight.
HTTPX2_KEEPALIVE = 20


@dataclass(frozen=True)
class Clients:
    """The shared clients: async for the gathered routes, sync for the sequential ones."""

    async_client: httpx2.AsyncClient
    sync_client: httpx2.Client
    #: The aiohttp engine's session under `async_client` (None on httpx2's own pool): the
    #: gathered routes call it directly, within the same pool bound.
    session: aiohttp.ClientSession | None = None


@asynccontextmanager
async def upstream_clients(settings: Settings) -> AsyncIterator[Clients]:
    """The clients for the life of the app (use it in the lifespan); closed on shutdown."""
    engine = _async_engine(settings)
    async with _async_client(engine, settings) as async_client:
        # Opened here, inside the running loop; closed with the client.
        session = engine.open_session() if isinstance(engine, AiohttpTransport) else None
        with build_sync_client(settings) as sync_client:
            yield Clients(async_client, sync_client, session)


def build_async_client(settings: Settings) -> httpx2.AsyncClient:
    """The process's one `httpx2.AsyncClient`."""
    return _async_client(_async_engine(settings), settings)


def _async_client(engine: httpx2.AsyncBaseTransport, settings: Settings) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=engine, timeout=_timeout(settings), cookies=no_cookies())


def build_sync_client(settings: Settings) -> httpx2.Client:
    """The one sync `httpx2.Client`, for the sequential route and the blocking anti-pattern."""
    engine = httpx2.HTTPTransport(limits=_limits(SYNC_POOL_SIZE, SYNC_POOL_SIZE))
    return httpx2.Client(
        transport=slowed_sync(engine, settings.call_overhead_ms),
        timeout=_timeout(settings),
        cookies=no_cookies(),
    )


def no_cookies() -> CookieJar:
    """A cookie jar that accepts no cookie from any domain (the standard library's policy)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _timeout(settings: Settings) -> httpx2.Timeout:
    return httpx2.Timeout(settings.call_timeout_s, pool=settings.deadline_s)


def _async_engine(settings: Settings) -> httpx2.AsyncBaseTransport:
    if settings.transport == "aiohttp":
        # The slowdown wraps the session, so the direct calls of the gathered routes pay it.
        return AiohttpTransport(
            max_connections=settings.pool_size,
            timeout=_timeout(settings),
            middlewares=slowed_session(settings.call_overhead_ms),
        )
    keepalive = min(settings.pool_size, HTTPX2_KEEPALIVE)
    # Waiters queue in front of httpx2's pool, never inside it (app/queued.py says why).
    pool = httpx2.AsyncHTTPTransport(limits=_limits(settings.pool_size, keepalive))
    return slowed_async(QueuedTransport(pool, settings.pool_size), settings.call_overhead_ms)


def _limits(connections: int, keepalive: int) -> httpx2.Limits:
    return httpx2.Limits(
        max_connections=connections,
        max_keepalive_connections=keepalive,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
