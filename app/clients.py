"""The two shared upstream clients, built once in the lifespan and never per request.

Building an `httpx.AsyncClient` costs tens of milliseconds (a new SSL context);
sharing one costs nothing. Its pool is sized from settings because httpx's
default of 100 connections would silently cap "unbounded" gather at 100.

The async client keeps httpx's API but not necessarily its engine: with
FANOUT_TRANSPORT=aiohttp (the default) requests go through `AiohttpTransport`,
a lean bridge to one `aiohttp.ClientSession`, whose pool queues waiters in
O(1) and costs ~0.1 ms of CPU per call; httpcore's pool costs ~1 ms and grows
with the number of waiting requests (encode/httpx#3215). benchmarks/ measures both.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
import yarl
from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from .settings import Settings

#: A sync `def` route runs in Starlette's threadpool (40 threads): more connections are idle.
SYNC_POOL_SIZE = 40
#: Seconds an idle pooled connection is kept (httpx's own default).
KEEPALIVE_EXPIRY_S = 5.0
#: Idle connections httpcore keeps (FANOUT_TRANSPORT=httpx); see `_async_transport`.
HTTPX_KEEPALIVE = 20
#: Parsed URLs the shared client remembers (the app calls at most FANOUT_MAX_N distinct ones).
URL_CACHE_SIZE = 4096
#: Distinct request header sets the transport keeps ready for aiohttp.
HEADER_CACHE_SIZE = 64
_HTTP11 = {"http_version": b"HTTP/1.1"}


class StatelessCookies(httpx.Cookies):
    """A cookie jar that never stores anything.

    One client serves every end user's request: a Set-Cookie from the upstream
    must not ride along on the next user's calls. It also skips httpx's
    per-response cookie parsing (about a sixth of a call's client CPU).
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class ReadyBody(httpx.ByteStream):
    """A whole response body already in memory that needs no Content-Encoding decoding."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.body = body


class SharedAsyncClient(httpx.AsyncClient):
    """The process's `httpx.AsyncClient`, trimmed of per-call work a shared client doesn't need.

    Its cookie jar stays empty (see StatelessCookies), and parsed URLs are
    remembered: a fan-out calls the same few upstream URLs again and again,
    and httpx parses each string anew (~10 us, a sixth of httpx's own cost).
    `httpx.URL` is immutable, so sharing one parsed URL between calls is safe.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cookies = StatelessCookies()
        self._parsed_urls: dict[str, httpx.URL] = {}

    def _merge_url(self, url: httpx.URL | str) -> httpx.URL:
        if not isinstance(url, str):
            return super()._merge_url(url)
        merged = self._parsed_urls.get(url)
        if merged is None:
            merged = super()._merge_url(url)
            if len(self._parsed_urls) >= URL_CACHE_SIZE:
                self._parsed_urls.clear()  # bounded: a flood of new URLs costs a re-parse
            self._parsed_urls[url] = merged
        return merged

    async def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """httpx's `send`, but a body the transport already holds is not re-read.

        httpx reads a response through three async-iterator layers (~14 us a call);
        for a `ReadyBody` the result is the body itself. The response ends as httpx
        leaves it: content set, stream consumed, closed by httpx (which sets `.elapsed`).
        Streamed responses, and any other stream, take httpx's own path unchanged.
        """
        if stream:
            return await super().send(request, stream=True, **kwargs)
        response = await super().send(request, stream=True, **kwargs)
        try:
            ready = getattr(response.stream, "_stream", None)  # inside httpx's BoundAsyncStream
            if isinstance(ready, ReadyBody) and not response.is_stream_consumed:
                response._content = ready.body
                response._num_bytes_downloaded = len(ready.body)
                response.is_stream_consumed = True
                await response.aclose()
            else:
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response

    @property
    def base_url(self) -> httpx.URL:
        return self._base_url

    @base_url.setter
    def base_url(self, url: httpx.URL | str) -> None:
        self._base_url = self._enforce_trailing_slash(httpx.URL(url))
        self._parsed_urls = {}  # relative URLs now resolve elsewhere

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise AttributeError("the shared fan-out client keeps no cookies")


def _map_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception a native transport would raise for this aiohttp failure."""
    message = str(exc) or type(exc).__name__
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError  # refused, unreachable, DNS: the upstream is not there
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout  # no pooled connection or no connect in time
    elif isinstance(exc, TimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        kind = httpx.RemoteProtocolError  # closed mid-response
    elif isinstance(exc, aiohttp.ClientResponseError):
        kind = httpx.RemoteProtocolError  # a malformed answer
    elif isinstance(exc, aiohttp.InvalidURL):
        kind = httpx.UnsupportedProtocol
    else:
        kind = httpx.ReadError
    return kind(message, request=request)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's API on aiohttp's engine: one `ClientSession`, bodies read whole.

    Why not httpx-aiohttp's transport: it streams every body through two
    async-iterator layers and hands aiohttp httpx's `Headers` (slow to
    iterate); reading the small upstream answer at once and passing plain
    pairs halves the client CPU per call. Errors become the httpx exceptions
    a native transport would raise, with the aiohttp one as `__cause__`.
    The session is made on first use, inside the running event loop.
    """

    def __init__(self, pool_size: int, keepalive_expiry: float = KEEPALIVE_EXPIRY_S) -> None:
        self._pool_size = pool_size
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, yarl.URL] = {}
        self._headers: dict[tuple[tuple[bytes, bytes], ...], CIMultiDictProxy[str]] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,  # in flight never exceeds it; waiters queue in O(1)
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx owns cookies
                auto_decompress=False,  # httpx decodes Content-Encoding itself
                trust_env=False,  # no proxy lookup per request
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),  # httpx sets them
            )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        spec = request.extensions.get("timeout") or {}
        key = (spec.get("connect"), spec.get("read"), spec.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            # aiohttp's `connect` covers the wait for a pooled connection plus the connect.
            whole = None if pool is None or connect is None else pool + connect
            timeout = aiohttp.ClientTimeout(
                total=None, connect=whole, sock_connect=connect, sock_read=read
            )
            self._timeouts[key] = timeout
        return timeout

    def _aiohttp_url(self, url: httpx.URL) -> yarl.URL:
        key = str(url)
        parsed = self._urls.get(key)
        if parsed is None:
            parsed = yarl.URL(key)
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()  # bounded, like the client's own URL cache
            self._urls[key] = parsed
        return parsed

    def _aiohttp_headers(self, headers: httpx.Headers) -> CIMultiDictProxy[str]:
        key = tuple(headers.raw)
        ready = self._headers.get(key)
        if ready is None:
            ready = CIMultiDictProxy(CIMultiDict(headers.multi_items()))
            if len(self._headers) >= HEADER_CACHE_SIZE:
                self._headers.clear()
            self._headers[key] = ready
        return ready

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._get_session()
        try:
            data: Any = request.content or None
        except httpx.RequestNotRead:
            data = request.stream  # a streaming upload: aiohttp iterates it
        try:
            async with session.request(
                request.method,
                self._aiohttp_url(request.url),
                headers=self._aiohttp_headers(request.headers),
                data=data,
                allow_redirects=False,  # httpx follows redirects itself
                timeout=self._timeout(request),
            ) as answer:
                body = await answer.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_error(exc, request) from exc
        extensions: dict[str, Any] = dict(_HTTP11)
        if answer.reason:
            extensions["reason_phrase"] = answer.reason.encode()
        # An unread stream, as any transport returns: httpx reads and closes it (`.elapsed`).
        # A body that needs no decoding is marked ready, so SharedAsyncClient.send can skip
        # httpx's async-iterator read of a body that is already in memory.
        encoded = hdrs.CONTENT_ENCODING in answer.headers
        stream = httpx.ByteStream(body) if encoded else ReadyBody(body)
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=stream,
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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
            body = await response.aread()
        # Hand httpx an unread stream, so it reads and closes it as usual (`.elapsed`).
        return httpx.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=httpx.ByteStream(body),
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _async_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    if settings.transport == "aiohttp":
        return AiohttpTransport(settings.pool_size)
    # httpcore polls every idle connection's socket on every pool operation, so a
    # keep-alive pool as large as the pool itself costs ~6 ms per call at 1000 in
    # flight; keeping httpx's default 20 idle costs ~1 ms (reconnects are cheaper).
    limits = httpx.Limits(
        max_connections=settings.pool_size,
        max_keepalive_connections=min(settings.pool_size, HTTPX_KEEPALIVE),
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    return PoolBoundTransport(httpx.AsyncHTTPTransport(limits=limits), settings.pool_size)


def build_async_client(settings: Settings) -> httpx.AsyncClient:
    """The one `httpx.AsyncClient` of the process, on the configured transport."""
    return SharedAsyncClient(
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
