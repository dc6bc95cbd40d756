"""The stub upstream's own HTTP/1.1 server: httptools under uvloop, no ASGI per item call.

Under uvicorn the stub spent about three quarters of its CPU outside its own
code: a scope dict, receive/send coroutines and a task per request, and two
writes per answer (head, then body: two send() calls). The stub must never
be the bottleneck of a measurement (docs/performance.md), so it serves
itself: `StubProtocol` parses with httptools (the parser uvicorn uses) and
hands an ordinary item call to `StubUpstream.serve_item` with the request's
parts, and the answer goes out in one write. A call that needs no waiting
(no delay, hold, hang, handler or stream) runs to its end right there, with
no task; one that waits goes on in a task from where it suspended
(`_resumed`). Control paths, streams and cut answers keep the ASGI
interface (`send` here, the app's `__call__` for control).

Kept from uvicorn: exact connection counting (`connections.CONNECTIONS`),
keep-alive for `keep_alive_s` (idle connections closed by a one-second tick,
not a timer per answer), pipelined requests answered in order, request bodies
(chunked too), `Expect: 100-continue`, a `date` header, one log line per cut
answer, graceful shutdown on SIGTERM/SIGINT (calls in flight get `grace_s`).
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import signal
import socket
import sys
import time
import traceback
import types
from collections import deque
from collections.abc import Generator
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from pytest_fanout.limits import MAX_HEAD_BYTES, MAX_ITEM_BODY, MAX_PIPELINED
from pytest_fanout.servers.connections import CONNECTIONS, ConnectionTable
from pytest_fanout.servers.upstream import CONTROL_PREFIX, MAX_CONTROL_BODY, StubUpstream

_STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CONTROL_BYTES = CONTROL_PREFIX.encode()


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


#: Heads built for (status, headers list) pairs, kept while the list lives: the same few
#: (a route's, the item answer's) serve nearly every call. Bounded: cleared when full.
_HEADS: dict[tuple[int, int], tuple[list[tuple[bytes, bytes]], bytes]] = {}
_MAX_HEADS = 256
#: Request targets split into (path, query), the same way (bounded the same way).
_URLS: dict[bytes, tuple[str, bytes]] = {}
_MAX_URLS = 4096
#: Only short heads and targets are cached (the caches stay within a few MiB).
_MAX_CACHED_BYTES = 1024


def _head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The status line and `headers`, each line ended, built once per headers list."""
    key = (status, id(headers))
    cached = _HEADS.get(key)
    if cached is not None and cached[0] is headers:
        return cached[1]
    head = _status_line(status) + b"".join(b"%s: %s\r\n" % pair for pair in headers)
    if len(head) <= _MAX_CACHED_BYTES:
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        _HEADS[key] = (headers, head)  # holds the list: its id cannot be reused meanwhile
    return head


def _date() -> bytes:
    return b"date: %s\r\n" % email.utils.formatdate(time.time(), usegmt=True).encode()


class _Server:
    """What the connections of one server share: the app, the table, open connections, and
    a tick each second (the `date` header, idle connections closed)."""

    def __init__(self, app: StubUpstream, keep_alive_s: float, table: ConnectionTable) -> None:
        self.app = app
        self.keep_alive_s = keep_alive_s
        self.table = table
        self.date = _date()
        #: Seconds since the server started, counted by `tick`.
        self.ticks = 1
        self.connections: set[StubProtocol] = set()
        self.stopping = False

    def tick(self) -> None:
        """Once a second: the date, and connections idle for keep_alive_s closed (an idle
        connection notes the tick its last answer ended at; 0 while it is in use)."""
        self.ticks += 1
        self.date = _date()
        oldest = self.ticks - self.keep_alive_s
        for connection in list(self.connections):
            if connection.idle_since and connection.idle_since <= oldest:
                connection.close_idle()


@types.coroutine
def _resumed(coro: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Go on with a coroutine that suspended outside any task (it yielded `yielded`): the
    task awaiting this waits for what it waits for, and passes back what it sends or
    throws (a cancellation). The same as `yield from`, for a coroutine already begun."""
    while True:
        try:
            value = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(value)
            except StopIteration as stop:
                return stop.value


class StubProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection to the stub. It is also the `Answer` of its current call:
    HTTP/1.1 answers a connection's requests one at a time, in order."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.app = server.app
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.closed = False
        # The request being parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.head_too_large = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_limit = MAX_ITEM_BODY
        self.parsing = False  # its head came, its body has not ended
        # Requests complete and waiting for the one being answered (pipelining).
        self.queue: deque[tuple[Any, ...]] = deque()
        self.busy = False  # a call is being answered
        self.draining = False  # `_done` is beginning queued requests
        self.read_paused = False
        # The answer of the current call.
        self.keep_alive = True
        self.head_request = False
        self.started = False
        self.complete = False
        self.chunked = False
        self.first_receive = True
        self.request_body = b""
        #: The server's tick when the connection became idle; 0 while in use.
        self.idle_since = 0
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None

    # ---- the connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        # TCP_NODELAY: uvloop and asyncio set it on every TCP connection.
        self.server.table.opened(self.peer)
        self.server.connections.add(self)
        # Idle from the start: one that never sends closes after keep_alive_s too.
        self.idle_since = self.server.ticks

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.idle_since = 0
        self.queue.clear()  # pipelined requests behind an unanswered one: never begun
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        # The watcher of a call in flight fires here: it is counted cut.
        self.server.table.closed(self.peer)
        if self.parsing and not self.busy:
            # The client went away mid-body: the call is counted and recorded aborted.
            self.parsing = False
            method = self.parser.get_method().decode("ascii", "replace")
            path, query = _split_url(self.url)
            if not path.startswith(CONTROL_PREFIX):
                self.busy = True
                self._run(
                    self.app.serve_item(
                        method,
                        path,
                        query,
                        self.headers,
                        self.peer,
                        b"".join(self.body),
                        self,
                        complete=False,
                    )
                )

    def data_received(self, data: bytes) -> None:
        self.idle_since = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An upgrade the stub does not speak (h2c, a websocket): the request is answered
            # over HTTP/1.1 as uvicorn does, then the connection closes (the parser cannot
            # go on past an upgrade).
            self.keep_alive = False
            if not self.busy and self.transport is not None:
                self.transport.close()
        except httptools.HttpParserError:
            # A callback's exception comes wrapped (HttpParserCallbackError): the flag says.
            if self.head_too_large:
                self._refuse(431, b"request head too large")
            else:
                self._refuse(400, b"invalid HTTP request")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def shutdown(self) -> None:
        """The server stops: close now when idle, else after the current answer."""
        self.keep_alive = False
        if not self.busy and not self.parsing and self.transport is not None:
            self.transport.close()

    def _gone(self) -> bool:
        """The connection closed or is closing: a write would go nowhere (or raise)."""
        return self.closed or self.transport is None or self.transport.is_closing()

    def _refuse(self, status: int, text: bytes) -> None:
        if self._gone():
            return
        if not self.busy:
            self._write_whole(status, [(b"content-type", b"text/plain")], text, close=True)
        self.transport.close()

    def close_idle(self) -> None:
        self.idle_since = 0
        if not self.busy and not self.parsing and self.transport is not None:
            self.transport.close()

    # ---- parser callbacks (httptools) ------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.body = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self.head_too_large = True
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            self.head_too_large = True
            raise _HeadTooLarge
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.parsing = True
        # A body is kept up to its bound and one byte more (so its reader refuses it).
        self.body_limit = (
            MAX_CONTROL_BODY + 1 if self.url.startswith(CONTROL_BYTES) else MAX_ITEM_BODY + 1
        )
        if not self.busy and not self.queue and self.transport is not None:
            for name, value in self.headers:
                if name == b"expect" and value.lower() == b"100-continue":
                    self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        room = self.body_limit - self.body_size
        self.body_size += len(body)
        if room > 0:
            self.body.append(body if len(body) <= room else body[:room])

    def on_message_complete(self) -> None:
        self.parsing = False
        if self.transport is None or self.transport.is_closing():
            return  # after an answer that closes the connection
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = (
            self.parser.get_method(),
            self.url,
            self.headers,
            body,
            self.body_size,
            self.parser.should_keep_alive(),
        )
        if self.busy or self.queue:
            self.queue.append(request)
            if len(self.queue) >= MAX_PIPELINED and not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        self._begin(request)

    # ---- one call ----------------------------------------------------------------------------

    def _begin(self, request: tuple[Any, ...]) -> None:
        raw_method, url, headers, body, size, keep_alive = request
        self.busy = True
        self.keep_alive = keep_alive and not self.server.stopping
        self.started = self.complete = self.chunked = False
        method = raw_method.decode("ascii", "replace")
        self.head_request = method == "HEAD"
        path, query = _split_url(url)
        if path.startswith(CONTROL_PREFIX):
            self.first_receive = True
            self.request_body = body
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1",
                "scheme": "http",
                "method": method,
                "path": path,
                "raw_path": url.split(b"?", 1)[0],
                "query_string": query,
                "root_path": "",
                "headers": headers,
                "client": self.peer,
                "server": None,
            }
            self._run(self.app(scope, self.receive, self.send))
            return
        too_large = size > MAX_ITEM_BODY
        self._run(
            self.app.serve_item(
                method, path, query, headers, self.peer, body, self, too_large=too_large
            )
        )

    def _run(self, coro: Any) -> None:
        """Run the call's coroutine here until it waits; then in a task from there on."""
        try:
            yielded = coro.send(None)
        except StopIteration:
            self._done()
        except Exception as exc:
            self._failed(exc)
        else:
            self.loop.create_task(self._go_on(coro, yielded))

    async def _go_on(self, coro: Any, yielded: Any) -> None:
        try:
            await _resumed(coro, yielded)
        except asyncio.CancelledError:
            if self.transport is not None:
                self.transport.close()
            raise
        except Exception as exc:
            self._failed(exc)
        else:
            self._done()

    def _failed(self, exc: Exception) -> None:
        print("stub upstream: exception while answering a call:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        if not self.started and not self._gone():
            self.keep_alive = False
            self._write_whole(500, [(b"content-type", b"text/plain")], b"Internal Server Error")
            self.complete = True
        self._done()

    def _done(self) -> None:
        """The call's coroutine ended: on to the next request, or close the connection."""
        self.busy = False
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return
        if not self.complete:
            if self.started:  # one line per cut answer, as uvicorn's (the gauge counts it)
                print(
                    "stub upstream: the call returned without completing response "
                    "(connection closed mid-answer)",
                    file=sys.stderr,
                )
            transport.close()  # a cut answer (its promised length never comes), or none
            return
        if not self.keep_alive:
            transport.close()
            return
        if self.draining:
            return  # the loop below, further up this stack, begins the next request
        # A loop, not a call per request: a long pipelined queue answered at once must not
        # nest one frame per request.
        self.draining = True
        try:
            while self.queue and not self.busy and not transport.is_closing():
                request = self.queue.popleft()
                if self.read_paused and len(self.queue) < MAX_PIPELINED // 2:
                    self.read_paused = False
                    transport.resume_reading()
                self._begin(request)
        finally:
            self.draining = False
        if not self.busy and not self.parsing and not self.queue:
            self.idle_since = self.server.ticks

    # ---- the Answer interface (upstream.Answer) and ASGI ---------------------------------------

    async def reply(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole answer in one write."""
        if self._gone():
            return
        self._write_whole(status, headers, body)
        self.complete = True

    def _write_whole(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, close: bool = False
    ) -> None:
        closing = b"connection: close\r\n" if close or not self.keep_alive else b""
        length = b"content-length: %d\r\n" % len(body)
        if status in (204, 304):  # no body, and no length, whatever the answer held
            body = length = b""
        elif self.head_request:
            body = b""  # the length still says what a GET would get
        self.started = True
        self.transport.write(  # type: ignore[union-attr]
            b"%s%s%s%s\r\n%s" % (_head(status, headers), self.server.date, length, closing, body)
        )

    async def receive(self) -> dict[str, Any]:
        """ASGI receive of a control call: its whole body, then a disconnect."""
        if self.first_receive:
            self.first_receive = False
            return {"type": "http.request", "body": self.request_body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI send: control answers, streamed answers (chunked when no length is given)
        and cut ones. After the client went away it does nothing, as uvicorn's."""
        if self._gone():
            return
        transport = self.transport
        assert transport is not None
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", ()))
            lengths = any(name.lower() == b"content-length" for name, _ in headers)
            no_body = self.head_request or status in (204, 304)
            self.chunked = not lengths and not no_body
            parts = [_status_line(status)]
            for name, value in headers:
                parts += (name, b": ", value, b"\r\n")
            parts.append(self.server.date)
            if self.chunked:
                parts.append(b"transfer-encoding: chunked\r\n")
            if not self.keep_alive:
                parts.append(b"connection: close\r\n")
            parts.append(b"\r\n")
            self.started = True
            transport.write(b"".join(parts))
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.head_request:
            pass
        elif self.chunked:
            if body:
                transport.write(b"%x\r\n%s\r\n" % (len(body), body))
            if not more:
                transport.write(b"0\r\n\r\n")
        elif body:
            transport.write(body)
        if not more:
            self.complete = True
        elif self.write_paused:
            self.drained = self.loop.create_future()
            await self.drained


class _HeadTooLarge(Exception):
    """A request head over MAX_HEAD_BYTES."""


def _split_url(url: bytes) -> tuple[str, bytes]:
    """(path, query string) of a request target; `%`-escapes in the path decoded."""
    split = _URLS.get(url)
    if split is None:
        split = _parse_url(url)
        if len(url) <= _MAX_CACHED_BYTES:
            if len(_URLS) >= _MAX_URLS:
                _URLS.clear()
            _URLS[url] = split
    return split


def _parse_url(url: bytes) -> tuple[str, bytes]:
    if url[:1] != b"/":
        parsed = httptools.parse_url(url)
        raw_path, query = parsed.path or b"/", parsed.query or b""
    else:
        raw_path, _, query = url.partition(b"?")
        if b"#" in query:
            query = query.split(b"#", 1)[0]
        if b"#" in raw_path:
            raw_path = raw_path.split(b"#", 1)[0]
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    return path, query


async def _serve(
    app: StubUpstream, sock: socket.socket, keep_alive_s: float, grace_s: float
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    shared = _Server(app, keep_alive_s, CONNECTIONS)
    server = await loop.create_server(lambda: StubProtocol(shared), sock=sock, backlog=2048)
    ticker = asyncio.create_task(_tick(shared))
    # What exists now (modules, functions) lives as long as the process: out of the
    # collector's full passes, which then walk only the calls' records.
    gc.freeze()
    try:
        await stop.wait()
    finally:
        shared.stopping = True
        ticker.cancel()
        server.close()
        for connection in list(shared.connections):
            connection.shutdown()
        # Calls in flight get grace_s to end (bounded: checked every 50 ms).
        deadline = loop.time() + grace_s
        while shared.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(shared.connections):
            if connection.transport is not None:
                connection.transport.abort()
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        app.shutdown()


async def _tick(server: _Server) -> None:
    while True:  # ends with the server (cancelled)
        await asyncio.sleep(1.0)
        server.tick()


def serve_stub(
    app: StubUpstream, sock: socket.socket, *, keep_alive_s: float, grace_s: float = 2.0
) -> int:
    """Serve the stub on the listening `sock` until SIGTERM or SIGINT; 0 when it ended."""
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it where it runs
        asyncio.run(_serve(app, sock, keep_alive_s, grace_s))
    else:
        uvloop.run(_serve(app, sock, keep_alive_s, grace_s))
    return 0
