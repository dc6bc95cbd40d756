"""The stub's own server in process (servers/stubhttp.py, no sockets): a call that waits
goes on in a task, heads and URLs are cached safely, the route index finds what a scan
of the routes in order finds."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers import stubhttp
from pytest_fanout.servers.connections import ConnectionTable
from pytest_fanout.servers.routes import Route
from pytest_fanout.servers.upstream import StubUpstream


class _Transport:
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40_000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connection(app: StubUpstream) -> tuple[stubhttp.StubProtocol, _Transport]:
    server = stubhttp._Server(app, 75, app.connections)
    protocol = stubhttp.StubProtocol(server)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def test_a_call_that_waits_nothing_is_answered_at_once_in_one_write() -> None:
    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        protocol, transport = _connection(app)
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        # No task, no loop pass: the answer is written inside data_received.
        assert len(transport.written) == 1
        assert transport.written[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert transport.written[0].endswith(b"\r\n\r\n" + b'{"ok":true}')
        assert app.gauge.completed == 1 and app.gauge.connections == 1

    asyncio.run(main())


def test_a_delayed_call_goes_on_in_a_task_and_pipelined_ones_wait_their_turn() -> None:
    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        protocol, transport = _connection(app)
        protocol.data_received(
            b"GET /a?delay_ms=30 HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert transport.written == []  # /a sleeps; /b waits behind it
        assert app.inflight_now == 1 and app.gauge.requests == 1
        for _ in range(200):  # bounded: 30 ms of delay, 10 ms a pass at most
            await asyncio.sleep(0.01)
            if len(transport.written) == 2:
                break
        assert len(transport.written) == 2 and app.gauge.completed == 2
        assert [c[3] for c in app.timeline.calls] == ["/a", "/b"]

    asyncio.run(main())


def test_a_long_pipelined_queue_is_answered_in_order_without_nesting() -> None:
    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        protocol, transport = _connection(app)
        # The first waits (a delay), 3000 more queue behind it; then all are answered.
        requests = [b"GET /first?delay_ms=20 HTTP/1.1\r\nHost: x\r\n\r\n"]
        requests += [b"GET /n/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3000)]
        protocol.data_received(b"".join(requests))
        assert transport.written == []
        for _ in range(500):  # bounded
            await asyncio.sleep(0.01)
            if len(transport.written) == 3001:
                break
        assert len(transport.written) == 3001 and app.gauge.completed == 3001
        assert [c[3] for c in app.timeline.calls][:3] == ["/first", "/n/0", "/n/1"]

    asyncio.run(main())


def test_a_call_whose_connection_is_closing_writes_nothing_more() -> None:
    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        protocol, transport = _connection(app)
        protocol.data_received(b"GET /slow?delay_ms=20 HTTP/1.1\r\nHost: x\r\n\r\n")
        protocol.data_received(b"NOT HTTP\r\n\r\n")  # refused: the connection closes
        assert transport.closing and transport.written == []
        for _ in range(100):  # bounded: the delayed call ends meanwhile
            await asyncio.sleep(0.01)
            if app.inflight_now == 0:
                break
        # Its answer is not written to the closing connection (a real one would raise).
        assert app.inflight_now == 0 and transport.written == []

    asyncio.run(main())


def test_a_handler_runs_inside_a_task() -> None:
    seen: list[object] = []

    async def handler(request: Any) -> dict[str, bool]:
        seen.append(asyncio.current_task())
        async with asyncio.timeout(5):  # needs a task
            await asyncio.sleep(0)
        return {"ok": True}

    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        route = Route.from_spec({"method": "GET", "path": "/h"})
        route.function, route.is_async, route.handler = handler, True, "tests:handler"
        route.static_body = None
        app._set_routes([route])
        protocol, transport = _connection(app)
        # From the loop, as a socket's data comes: outside any task.
        request = b"GET /h HTTP/1.1\r\nHost: x\r\n\r\n"
        asyncio.get_running_loop().call_soon(protocol.data_received, request)
        for _ in range(100):  # bounded
            await asyncio.sleep(0.01)
            if transport.written:
                break
        assert seen and seen[0] is not None
        assert transport.written[0].startswith(b"HTTP/1.1 200 OK\r\n")

    asyncio.run(main())


def test_connection_close_is_answered_then_closed() -> None:
    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        protocol, transport = _connection(app)
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"connection: close\r\n" in transport.written[0]
        assert transport.closing

    asyncio.run(main())


def test_an_upgrade_is_answered_over_http_1_1_then_the_connection_closes() -> None:
    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        protocol, transport = _connection(app)
        protocol.data_received(
            b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )
        [answer] = transport.written
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'{"ok":true}')
        assert transport.closing

    asyncio.run(main())


def test_idle_connections_close_after_the_keep_alive_ticks_and_busy_ones_do_not() -> None:
    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        server = stubhttp._Server(app, 3, app.connections)
        silent, used, busy = (stubhttp.StubProtocol(server) for _ in range(3))
        transports = [_Transport() for _ in range(3)]
        for protocol, transport in zip((silent, used, busy), transports, strict=True):
            protocol.connection_made(transport)  # type: ignore[arg-type]
        server.tick()
        used.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # idle from tick 2
        busy.data_received(b"GET /b?delay_ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        closed = []
        for _ in range(4):
            server.tick()
            closed.append([t.closing for t in transports])
        # The silent one at tick 4 (idle since 1), the used one at tick 5, never the busy one.
        assert closed == [
            [False, False, False],
            [True, False, False],
            [True, True, False],
            [True, True, False],
        ]
        for protocol in (silent, used, busy):
            protocol.connection_lost(None)
        await asyncio.sleep(0)

    asyncio.run(main())


def test_a_request_head_over_its_bound_is_a_431_and_closes() -> None:
    async def main() -> None:
        app = StubUpstream(Behaviour(delay_ms=0), connections=ConnectionTable())
        protocol, transport = _connection(app)
        big = b"x" * (stubhttp.MAX_HEAD_BYTES + 1)
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
        [answer] = transport.written
        assert answer.startswith(b"HTTP/1.1 431 ") and transport.closing
        assert app.gauge.requests == 0  # never reached the stub's code

    asyncio.run(main())


def test_a_head_is_cached_only_while_its_headers_list_is_the_same_object() -> None:
    first = [(b"content-type", b"application/json")]
    head = stubhttp._head(200, first)
    assert head == b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    assert stubhttp._head(200, first) is head
    other = [(b"content-type", b"text/plain")]
    assert stubhttp._head(200, other) == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
    assert stubhttp._head(599, []) == b"HTTP/1.1 599 \r\n"


def test_the_caches_keep_only_short_heads_and_targets() -> None:
    long_target = b"/" + b"a" * 5000
    assert stubhttp._split_url(long_target) == ("/" + "a" * 5000, b"")
    assert long_target not in stubhttp._URLS
    long_headers = [(b"x-long", b"v" * 5000)]
    stubhttp._head(200, long_headers)
    assert (200, id(long_headers)) not in stubhttp._HEADS


@pytest.mark.parametrize(
    ("target", "split"),
    [
        (b"/a/b?x=1&y=2", ("/a/b", b"x=1&y=2")),
        (b"/a%20b", ("/a b", b"")),
        (b"/a#frag", ("/a", b"")),
        (b"http://host:8/abs/p?q=1", ("/abs/p", b"q=1")),
    ],
)
def test_request_targets_split_as_uvicorn_does(target: bytes, split: tuple[str, bytes]) -> None:
    assert stubhttp._split_url(target) == split
    assert stubhttp._split_url(target) == split  # cached the same


def test_the_route_index_finds_what_a_scan_in_order_finds() -> None:
    templates = [
        "/items/{i}",
        "/{x}/raw",
        "/items/{i}/more",
        "/v{n}/a",
        "/other/{i}",
        "/items/fixed",
        "/{a}/{b}",
        "/items/{i}/raw",
    ]
    routes = [
        Route.from_spec({"method": method, "path": path})
        for path in templates
        for method in ("GET", "POST")
    ]
    app = StubUpstream(Behaviour(), connections=ConnectionTable())
    app._set_routes(routes)
    pick = random.Random(7)
    segments = ["items", "raw", "more", "v2", "va", "other", "fixed", "", "x"]
    for _ in range(2000):
        path = "/" + "/".join(pick.choice(segments) for _ in range(pick.randint(0, 3)))
        method = pick.choice(["GET", "POST", "PUT", "HEAD"])
        found, params = app._find(method, path)
        # The reference: literal routes first, then templated ones in the order added.
        literal = [r for r in routes if r.regex is None and r.match(method, path) is not None]
        templated = [r for r in routes if r.regex is not None and r.match(method, path) is not None]
        if method == "HEAD":
            expected = next((r for r in routes if r.match(method, path) is not None), None)
        else:
            expected = (literal or templated or [None])[0]
        assert found is expected, (method, path)
        if expected is not None:
            assert params == expected.match(method, path)
