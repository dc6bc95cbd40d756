"""The app's shared clients behave as stock httpx2 clients do, on either engine.

app/clients.py builds a stock `httpx2.AsyncClient`; FANOUT_TRANSPORT only
changes what carries its bytes (app/transport.py, aiohttp's engine, or
httpx2's own pool). So every check here runs on both engines against real
servers on loopback, and must give the same result: the answer as stock
httpx2 reads it, the same exception types, the pool bound exact at the
upstream, Content-Encoding decoded, and no cookie kept between calls.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx2
import pytest

from app import fanout
from app.clients import build_async_client, build_sync_client, upstream_clients
from app.settings import TRANSPORTS, Settings
from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import StubUpstreamServer
from pytest_fanout.servers.upstream import ITEM_BODY

DELAY_MS = 50


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstreamServer]:
    with StubUpstreamServer(Behaviour(delay_ms=DELAY_MS)) as server:
        yield server


@pytest.fixture
def stub(upstream: StubUpstreamServer) -> StubUpstreamServer:
    upstream.restore()
    upstream.reset()
    return upstream


def run(settings: Settings, scenario: Callable[[httpx2.AsyncClient], Awaitable[object]]) -> object:
    async def main() -> object:
        async with build_async_client(settings) as client:
            return await scenario(client)

    return asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_answers_read_as_stock_httpx2_reads_them(stub: StubUpstreamServer, transport: str) -> None:
    settings = Settings(upstream_url=stub.url, transport=transport)  # type: ignore[arg-type]

    async def scenario(client: httpx2.AsyncClient) -> list[httpx2.Response]:
        ok = await client.get(f"{stub.url}/items/1")
        failed = await client.get(f"{stub.url}/items/2?status=503")
        async with client.stream("GET", f"{stub.url}/items/3") as streamed:
            assert not streamed.is_closed
            chunks = [chunk async for chunk in streamed.aiter_bytes()]
        assert b"".join(chunks) == ITEM_BODY
        return [ok, failed, streamed]

    ok, failed, streamed = run(settings, scenario)  # type: ignore[misc]
    assert (ok.status_code, failed.status_code, streamed.status_code) == (200, 503, 200)
    assert ok.json() == {"ok": True}
    assert ok.reason_phrase == "OK" and failed.reason_phrase == "Service Unavailable"
    assert ok.http_version == "HTTP/1.1"
    assert ok.headers["content-type"] == "application/json"
    assert ok.request.url == f"{stub.url}/items/1"
    for response in (ok, failed, streamed):
        assert response.is_closed and response.is_stream_consumed
        # The stub answered after DELAY_MS: `.elapsed` is the real round trip, set on close.
        assert response.elapsed.total_seconds() >= DELAY_MS / 1000
    assert ok.num_bytes_downloaded == len(ITEM_BODY)
    assert stub.stats()["requests"] == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_pool_bound_is_exact_at_the_upstream(stub: StubUpstreamServer, transport: str) -> None:
    """FANOUT_POOL_SIZE=5: 20 gathered calls, never more than 5 in flight, all answered."""
    stub.configure(delay_ms=200)
    settings = Settings(upstream_url=stub.url, transport=transport, pool_size=5)  # type: ignore[arg-type]

    async def scenario(client: httpx2.AsyncClient) -> list[int]:
        answers = await asyncio.gather(*(client.get(f"{stub.url}/items/{i}") for i in range(20)))
        return [a.status_code for a in answers]

    with stub.hold(app_pid=os.getpid()) as held:  # this process is the client
        assert run(settings, scenario) == [200] * 20
    assert held.waves == [5, 5, 5, 5]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("query", "error"),
    [("delay_ms=2000", httpx2.ReadTimeout), ("fault=drop", httpx2.RemoteProtocolError)],
)
def test_failures_raise_the_stock_exception(
    stub: StubUpstreamServer, transport: str, query: str, error: type[Exception]
) -> None:
    settings = Settings(
        upstream_url=stub.url,
        transport=transport,  # type: ignore[arg-type]
        call_timeout_s=0.3,
    )

    async def scenario(client: httpx2.AsyncClient) -> object:
        return await client.get(f"{stub.url}/items/1?{query}")

    with pytest.raises(error):
        run(settings, scenario)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refused_connection_is_a_connect_error(transport: str) -> None:
    closed = StubUpstreamServer(Behaviour(delay_ms=0)).start()
    closed.stop()
    settings = Settings(upstream_url=closed.url, transport=transport)  # type: ignore[arg-type]

    async def scenario(client: httpx2.AsyncClient) -> object:
        return await client.get(f"{closed.url}/items/0")

    with pytest.raises(httpx2.ConnectError):
        run(settings, scenario)


# ---- a raw upstream that sets a cookie and gzips its body ----------------------------------


GZIPPED = gzip.compress(ITEM_BODY)


async def serve_cookie_and_gzip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[dict[str, str]]
) -> None:
    """Keep-alive HTTP/1.1: every answer sets a cookie and is gzip-encoded."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            lines = head.decode("latin-1").split("\r\n")[1:]
            seen.append(dict(line.lower().split(": ", 1) for line in lines if ": " in line))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"set-cookie: session=user-a; Path=/\r\ncontent-encoding: gzip\r\n"
                + f"content-length: {len(GZIPPED)}\r\n\r\n".encode()
                + GZIPPED
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_cookie_rides_along_and_bodies_are_decoded(transport: str) -> None:
    """One client serves every user: a Set-Cookie for one must not reach the next call."""
    seen: list[dict[str, str]] = []

    async def main() -> tuple[list[bytes], int]:
        server = await asyncio.start_server(
            lambda r, w: serve_cookie_and_gzip(r, w, seen), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        settings = Settings(upstream_url=f"http://127.0.0.1:{port}", transport=transport)  # type: ignore[arg-type]
        try:
            async with build_async_client(settings) as client:
                bodies = [
                    (await client.get(f"{settings.upstream_url}/items/{i}")).content
                    for i in range(2)
                ]
                return bodies, len(client.cookies)
        finally:
            server.close()
            await server.wait_closed()

    bodies, kept = asyncio.run(main())
    assert bodies == [ITEM_BODY, ITEM_BODY]  # gzip decoded, as stock httpx2 does
    assert kept == 0
    assert len(seen) == 2 and "cookie" not in seen[1]


def test_a_stock_client_would_have_sent_the_cookie() -> None:
    """The control: the check above could fail, because httpx2's default jar keeps it."""
    seen: list[dict[str, str]] = []

    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: serve_cookie_and_gzip(r, w, seen), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx2.AsyncClient(verify=tls_context()) as client:
                for i in range(2):
                    await client.get(f"http://127.0.0.1:{port}/items/{i}")
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    assert seen[1].get("cookie") == "session=user-a"


def test_the_sync_client_keeps_no_cookie_and_reads_like_stock(stub: StubUpstreamServer) -> None:
    with build_sync_client(Settings(upstream_url=stub.url)) as client:
        response = client.get(f"{stub.url}/items/1")
        assert response.json() == {"ok": True}
        assert response.elapsed.total_seconds() >= DELAY_MS / 1000
        assert len(client.cookies) == 0


# ---- the gathered routes' direct calls on aiohttp's session (app/fanout.py) ----------------


def test_direct_calls_on_the_session_end_as_the_client_calls_do(stub: StubUpstreamServer) -> None:
    """On aiohttp's engine the gathered routes call its session directly: each outcome
    (status, error name, unreachable) is what the same call through the httpx2 client gives."""
    closed = StubUpstreamServer(Behaviour(delay_ms=0)).start()
    closed.stop()
    settings = Settings(upstream_url=stub.url, call_timeout_s=0.3)
    urls = [
        f"{stub.url}/items/1",
        f"{stub.url}/items/2?status=503",
        f"{stub.url}/items/3?delay_ms=2000",
        f"{stub.url}/items/4?fault=drop",
        f"{closed.url}/items/5",
    ]

    async def main() -> tuple[list[fanout.CallOutcome], ...]:
        async with upstream_clients(settings) as clients:
            assert clients.session is not None  # the default engine is aiohttp's
            direct = await fanout.gather_all(clients.session, urls, deadline_s=10)
            through = await fanout.gather_all(clients.async_client, urls, deadline_s=10)
        return direct, through

    direct, through = asyncio.run(main())
    names = [(o.status, o.error, o.unreachable) for o in direct]
    assert names == [(o.status, o.error, o.unreachable) for o in through]
    assert names == [
        (200, None, False),
        (503, "HTTP 503", False),
        (None, "ReadTimeout", False),
        (None, "RemoteProtocolError", False),
        (None, "ConnectError", True),
    ]


def test_the_injected_slowdown_also_slows_the_direct_calls(stub: StubUpstreamServer) -> None:
    """FANOUT_CALL_OVERHEAD_MS is a middleware on aiohttp's session: the direct calls pay it."""
    stub.configure(delay_ms=0)
    settings = Settings(upstream_url=stub.url, call_overhead_ms=20)

    async def main() -> float:
        async with upstream_clients(settings) as clients:
            assert clients.session is not None
            start = time.perf_counter()
            outcomes = await fanout.gather_all(
                clients.session, [f"{stub.url}/items/{i}" for i in range(5)], deadline_s=10
            )
            spent = time.perf_counter() - start
        assert all(o.ok for o in outcomes)
        return spent

    assert asyncio.run(main()) >= 0.1  # 5 x 20 ms spun on the loop: a busy machine cannot cut it
