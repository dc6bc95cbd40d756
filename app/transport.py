"""An httpx2 transport on aiohttp's engine: why the app has one.

The routes use a stock `httpx2.AsyncClient` (app/clients.py); this module only
changes what carries its bytes. httpx2's own pool spends about a millisecond
of CPU per call, more as requests queue on it (encode/httpx#3215), so a
1000-wide gather is CPU-bound in the client. aiohttp's connector queues
waiters in O(1) and costs about a tenth of that. Plugged in through the
public transport API (`AsyncBaseTransport.handle_async_request`), it keeps
httpx2's API for the routes (requests, responses, timeouts, redirects,
errors) and touches no private name of either library.
FANOUT_TRANSPORT=httpx2 takes it out.

Per call: one request on the process's one `aiohttp.ClientSession`, the
body read whole (upstream answers are small), and any failure raised as the
httpx2 exception a native transport raises, with aiohttp's as `__cause__`.

The gathered routes go one step further and call that same session directly
(`app.fanout.fetch_on_session`): httpx2's request layer costs more CPU per
call than aiohttp's whole request (docs/performance.md measures it), and a
1000-wide gather is CPU-bound in the client. The session is the same, so is
the pool bound; `error_kind` gives a direct call's failure the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import httpx2
import yarl

#: Seconds an idle pooled connection is kept (httpx2's own default).
KEEPALIVE_EXPIRY_S = 5.0


def error_kind(exc: BaseException) -> type[httpx2.TransportError]:
    """The httpx2 exception type a native transport would raise for this aiohttp failure."""
    kind: type[httpx2.TransportError]
    if isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx2.ConnectError  # refused, unreachable, DNS: the upstream is not there
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx2.ConnectTimeout  # no pooled connection, or no connect, in time
    elif isinstance(exc, TimeoutError):
        kind = httpx2.ReadTimeout
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        kind = httpx2.RemoteProtocolError  # closed mid-response
    elif isinstance(exc, aiohttp.ClientResponseError):
        kind = httpx2.RemoteProtocolError  # a malformed answer
    elif isinstance(exc, aiohttp.InvalidURL):
        kind = httpx2.UnsupportedProtocol
    else:
        kind = httpx2.ReadError
    return kind


def _httpx2_error(exc: BaseException, request: httpx2.Request) -> httpx2.TransportError:
    """The httpx2 exception a native transport would raise for this aiohttp failure."""
    return error_kind(exc)(str(exc) or type(exc).__name__, request=request)


def client_timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    """httpx2's timeouts (connect, read, pool) in aiohttp's terms."""
    # aiohttp's `connect` covers the wait for a pooled connection plus the connect.
    whole = None if pool is None or connect is None else pool + connect
    return aiohttp.ClientTimeout(total=None, connect=whole, sock_connect=connect, sock_read=read)


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """httpx2's client API on one `aiohttp.ClientSession`; at most `max_connections` open.

    The session is made on first use (or by `open_session`), inside the running
    event loop, and closed with the client (`aclose`). `timeout` is the session's
    default (a direct call's; a call through httpx2 brings its own), `middlewares`
    wrap every call on the session (the injected slowdown, app/slowdown.py).
    """

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_S,
        timeout: httpx2.Timeout | None = None,
        middlewares: Sequence[aiohttp.ClientMiddlewareType] = (),
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.default_timeout = (
            client_timeout(timeout.connect, timeout.read, timeout.pool)
            if timeout is not None
            else aiohttp.ClientTimeout()
        )
        self.middlewares = tuple(middlewares)
        self.session: aiohttp.ClientSession | None = None
        self.timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def open_session(self) -> aiohttp.ClientSession:
        if self.session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,  # in flight never exceeds it; waiters queue in O(1)
                limit_per_host=0,
                keepalive_timeout=self.keepalive_expiry,
            )
            self.session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # the httpx2 client owns cookies
                auto_decompress=False,  # httpx2 decodes Content-Encoding itself
                trust_env=False,  # no proxy lookup per request
                timeout=self.default_timeout,
                middlewares=self.middlewares,
            )
        return self.session

    def timeout(self, request: httpx2.Request) -> aiohttp.ClientTimeout:
        """httpx2's per-request timeouts in aiohttp's terms (a handful of distinct ones)."""
        spec = request.extensions.get("timeout") or {}
        key = (spec.get("connect"), spec.get("read"), spec.get("pool"))
        timeout = self.timeouts.get(key)
        if timeout is None:
            timeout = self.timeouts[key] = client_timeout(*key)
        return timeout

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self.session or self.open_session()
        try:
            data: Any = request.content or None
        except httpx2.RequestNotRead:
            data = request.stream  # a streamed upload: aiohttp iterates it
        try:
            async with session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # httpx2 has encoded it already
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,  # the httpx2 client follows redirects itself
                timeout=self.timeout(request),
            ) as answer:
                body = await answer.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _httpx2_error(exc, request) from exc
        return httpx2.Response(
            answer.status,
            headers=answer.raw_headers,
            # Unread, as any transport returns it: the client reads it (decoding any
            # Content-Encoding), closes it and sets `.elapsed`.
            stream=httpx2.ByteStream(body),
            extensions={
                "http_version": f"HTTP/{answer.version.major}.{answer.version.minor}".encode(),
                "reason_phrase": (answer.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
