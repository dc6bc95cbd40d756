"""Streaming stub routes, end to end on a real stub process: server-sent events and raw
chunks, a time to first byte and a pace, from a list or a handler; the call is in flight
(gauge and recorded status) until its last byte; bad streams are one line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout import RouteError
from pytest_fanout.limits import Behaviour
from pytest_fanout.servers import StubUpstreamServer
from pytest_fanout.servers.process import tls_context

HANDLERS = """
import asyncio

from pytest_fanout import StubStream


def countdown(request):
    n = int(request.query.get("n", "3"))
    return StubStream(chunks=(f"{i}\\n" for i in range(n, 0, -1)), chunk_delay_ms=20)


async def tokens(request):
    async def words():
        for word in request.json()["say"].split():
            await asyncio.sleep(0)
            yield {"data": {"token": word}}
        yield "[DONE]"

    return StubStream(events=words(), headers={"x-model": "stub-1"})


def broken(request):
    def pieces():
        yield "first"
        raise RuntimeError("the model fell over")

    return StubStream(chunks=pieces())


def neither(request):
    return StubStream()


def unpaced(request):
    return StubStream(chunks=["p"] * 20)
"""


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubUpstreamServer]:
    root = tmp_path_factory.mktemp("streaming")
    (root / "stream_handlers.py").write_text(HANDLERS)
    with StubUpstreamServer(Behaviour(delay_ms=0), app_dir=root) as server:
        yield server


@pytest.fixture
def upstream(stub: StubUpstreamServer) -> StubUpstreamServer:
    stub.restore()
    stub.reset()
    return stub


def timed_stream(url: str, **kwargs: object) -> tuple[list[bytes], float, float, httpx2.Response]:
    """(the pieces as they arrived, seconds to the first piece, to the last, the response)."""
    pieces = []
    start = time.perf_counter()
    first = last = 0.0
    with httpx2.stream("GET", url, timeout=30, verify=tls_context(), **kwargs) as response:  # type: ignore[arg-type]
        for piece in response.iter_raw():
            if not pieces:
                first = time.perf_counter() - start
            pieces.append(piece)
        last = time.perf_counter() - start
    return pieces, first, last, response


def parse_sse(body: bytes) -> list[dict[str, str]]:
    events = []
    for block in body.decode().split("\n\n"):
        if block:
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields[name] = fields[name] + "\n" + value if name in fields else value
            events.append(fields)
    return events


def test_sse_events_arrive_after_the_ttfb_then_at_the_pace(upstream: StubUpstreamServer) -> None:
    upstream.route(
        "GET",
        "/v1/stream",
        events=["hello", {"event": "delta", "id": "2", "data": {"text": "world"}}, "[DONE]"],
        delay_ms=300,
        chunk_delay_ms=150,
    )
    pieces, first, last, response = timed_stream(upstream.url + "/v1/stream")
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert parse_sse(b"".join(pieces)) == [
        {"data": "hello"},
        {"event": "delta", "id": "2", "data": '{"text":"world"}'},
        {"data": "[DONE]"},
    ]
    # Exact lower bounds (the stub cannot send earlier), no upper bound a busy machine breaks.
    assert first >= 0.3
    assert last - first >= 2 * 0.15 * 0.9  # two pauses between three events
    [record] = upstream.requests("GET", "/v1/stream")
    assert (record.status, record.delay_ms) == (200, 300)


def test_a_streaming_call_is_in_flight_until_its_last_byte(upstream: StubUpstreamServer) -> None:
    upstream.route("GET", "/slow", chunks=["a", "b", "c"], delay_ms=0, chunk_delay_ms=400)
    with httpx2.stream("GET", upstream.url + "/slow", timeout=30, verify=tls_context()) as response:
        pieces = response.iter_raw()
        assert next(pieces) == b"a"  # the first byte is here, the rest is not
        during = upstream.stats()
        [record] = upstream.requests("GET", "/slow")
        assert record.status == 0  # not answered until the last byte
        assert b"".join(pieces) == b"bc"
    assert (during["inflight"], during["completed"]) == (1, 0)
    after = upstream.stats()
    assert (after["inflight"], after["completed"], after["peak_inflight"]) == (0, 1, 1)
    assert upstream.requests("GET", "/slow")[0].status == 200


def test_tokens_per_second_paces_the_pieces(upstream: StubUpstreamServer) -> None:
    upstream.route("GET", "/tokens", chunks=["t"] * 6, delay_ms=0, tokens_per_s=10)
    pieces, first, last, _ = timed_stream(upstream.url + "/tokens")
    assert b"".join(pieces) == b"t" * 6
    assert last - first >= 5 * 0.1 * 0.9  # five intervals of 100 ms, on an absolute schedule


def test_a_handler_stream_without_a_pace_takes_the_routes(upstream: StubUpstreamServer) -> None:
    """20 pieces at the route's 40/s: 19 intervals of 25 ms (0.475 s), not all at once."""
    upstream.route("GET", "/unpaced", handler="stream_handlers:unpaced", tokens_per_s=40)
    pieces, first, last, _ = timed_stream(upstream.url + "/unpaced")
    assert b"".join(pieces) == b"p" * 20
    assert last - first >= 0.3  # on an absolute schedule; sent at once it took ~0


def test_a_handler_streams_from_a_generator(upstream: StubUpstreamServer) -> None:
    upstream.route("GET", "/countdown", handler="stream_handlers:countdown")
    pieces, _, _, response = timed_stream(upstream.url + "/countdown?n=4")
    assert b"".join(pieces) == b"4\n3\n2\n1\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_a_handler_streams_events_from_an_async_generator(upstream: StubUpstreamServer) -> None:
    upstream.route("POST", "/v1/chat", handler="stream_handlers:tokens", tokens_per_s=1000)
    with httpx2.stream(
        "POST",
        upstream.url + "/v1/chat",
        json={"say": "one two three"},
        timeout=30,
        verify=tls_context(),
    ) as response:
        body = response.read()
    assert response.headers["x-model"] == "stub-1"
    assert [e["data"] for e in parse_sse(body)] == [
        '{"token":"one"}',
        '{"token":"two"}',
        '{"token":"three"}',
        "[DONE]",
    ]


def test_a_stream_that_breaks_mid_way_cuts_the_connection(upstream: StubUpstreamServer) -> None:
    upstream.route("GET", "/broken", handler="stream_handlers:broken")
    upstream.route("GET", "/dropped", chunks=["x", "y", "z"], chunk_delay_ms=10)
    for path in ("/broken", "/dropped?fault=drop"):
        with pytest.raises(httpx2.RemoteProtocolError):
            httpx2.get(upstream.url + path, timeout=30, verify=tls_context())
    stats = upstream.stats()
    assert (stats["dropped"], stats["completed"]) == (2, 0)
    assert "the model fell over" in upstream.log_tail()


def test_a_handler_stream_without_pieces_is_a_500_saying_why(upstream: StubUpstreamServer) -> None:
    upstream.route("GET", "/neither", handler="stream_handlers:neither")
    answer = httpx2.get(upstream.url + "/neither", timeout=30, verify=tls_context())
    assert answer.status_code == 500
    assert "StubStream needs events= or chunks=" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"events": ["a"], "chunks": ["b"]}, "give events= or chunks=, not both"),
        ({"events": []}, "events= and chunks= must be non-empty lists"),
        ({"events": [3]}, "an event must be a string or a dict, not int"),
        ({"events": [{"data": "x", "colour": "red"}]}, "an event has unknown key(s) colour"),
        ({"chunks": ["a"], "json": {"a": 1}}, "a streamed route has no json= or body="),
        ({"chunk_delay_ms": 5}, "chunk_delay_ms= and tokens_per_s= pace events= or chunks="),
        ({"chunks": ["a"], "tokens_per_s": -1}, "tokens_per_s=-1 must be a finite number"),
        (
            {"chunks": ["a"], "tokens_per_s": 5, "chunk_delay_ms": 5},
            "give chunk_delay_ms= or tokens_per_s=, not both",
        ),
    ],
)
def test_bad_streams_are_refused_in_one_line(
    upstream: StubUpstreamServer, settings: dict, message: str
) -> None:
    with pytest.raises(RouteError) as caught:
        upstream.route("GET", "/bad", **settings)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_handler_route_may_not_list_pieces(upstream: StubUpstreamServer, tmp_path: Path) -> None:
    with pytest.raises(RouteError, match="a handler streams by returning a StubStream"):
        upstream.route("GET", "/h", handler="stream_handlers:countdown", chunks=["a"])
