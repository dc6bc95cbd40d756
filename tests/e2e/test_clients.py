"""The app's shared async client keeps httpx's Response semantics on both transports.

app/clients.py trims per-call work (a ready body is not re-read through httpx's
iterators, parsed URLs and headers are cached); these checks, against the real
stub upstream, fail if a future httpx changes what that relies on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from app.clients import build_async_client
from app.settings import Settings
from pytest_fanout.servers.stack import StubUpstreamServer
from pytest_fanout.servers.upstream import ITEM_BODY, Behaviour


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstreamServer]:
    with StubUpstreamServer(Behaviour(delay_ms=0)) as server:
        yield server


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_responses_read_like_stock_httpx(upstream: StubUpstreamServer, transport: str) -> None:
    settings = Settings(upstream_url=upstream.url, transport=transport)  # type: ignore[arg-type]

    async def scenario() -> list[httpx.Response]:
        async with build_async_client(settings) as client:
            first = await client.get(f"{upstream.url}/items/1")
            again = await client.get(f"{upstream.url}/items/1")  # cached URL and headers
            failed = await client.get(f"{upstream.url}/items/2?status=503")
            async with client.stream("GET", f"{upstream.url}/items/3") as streamed:
                chunks = [chunk async for chunk in streamed.aiter_bytes()]
            assert b"".join(chunks) == ITEM_BODY
            return [first, again, failed]

    for response in asyncio.run(scenario()):
        assert response.content == ITEM_BODY
        assert response.is_closed and response.is_stream_consumed
        assert response.num_bytes_downloaded == len(ITEM_BODY)
        assert response.elapsed.total_seconds() >= 0
        assert response.headers["content-type"] == "application/json"
    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200, 200, 503]
    assert responses[0].json() == {"ok": True}


def test_refused_connection_is_a_connect_error() -> None:
    closed = StubUpstreamServer(Behaviour(delay_ms=0)).start()
    closed.stop()
    settings = Settings(upstream_url=closed.url)

    async def scenario() -> None:
        async with build_async_client(settings) as client:
            await client.get(f"{closed.url}/items/0")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(scenario())
