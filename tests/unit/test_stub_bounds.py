"""The stub's counts are exact past every bound; its sample is bounded by count and bytes and
read in pages; sync handlers run off its loop; bad route headers and bodies are one line.

In-process (the stub as an ASGI app); the same behaviours through a real stub
process are in tests/e2e/test_stub_reliability.py."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import tracemalloc

import httpx2
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.calls import MAX_PATHS, CallCounter
from pytest_fanout.servers.recorder import MAX_HEADER_BYTES, PAGE_BYTES, Recorder
from pytest_fanout.servers.routes import Route, RouteError, StubResponse, handler_result
from pytest_fanout.servers.upstream import StubUpstream


def run(coro):
    return asyncio.run(coro)


async def _client(stub: StubUpstream) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=stub),
        base_url="http://stub",
        headers={"Authorization": f"Bearer {stub.token}"},
        timeout=30,
    )


# ---- counts come from the counter, not the sample ---------------------------------------


def test_calls_are_counted_exactly_past_the_record_bound() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0, record_requests=5), token="t")

    async def scenario() -> tuple[dict, dict, int]:
        async with await _client(stub) as client:
            for i in range(12):
                await client.get(f"/stock/{i}")
            await client.post("/quote")
            by_template = await client.get(
                "/__upstream__/calls", params={"method": "GET", "path": "/stock/{sku}"}
            )
            everything = await client.get("/__upstream__/calls")
            kept = await client.get("/__upstream__/requests")
            return by_template.json(), everything.json(), len(kept.json()["requests"])

    by_template, everything, kept = run(scenario())
    assert by_template["matching"] == 12 and by_template["uncounted"] == 0
    assert by_template["kept"] == 5 and by_template["total"] == 13
    assert everything["matching"] == 13
    assert kept == 5


def test_the_counter_says_when_it_could_not_place_a_call() -> None:
    counter = CallCounter()
    for i in range(MAX_PATHS + 3):
        counter.add("GET", f"/p/{i}")
    counter.add("GET", "/" + "x" * 5000)  # too long a path for its own key
    counted = counter.count("GET", lambda path: path.startswith("/p/"))
    assert counted["matching"] == MAX_PATHS and counted["uncounted"] == 4
    assert counter.count(None, None)["matching"] == MAX_PATHS + 4  # the total is exact
    assert counted["keys"] == MAX_PATHS and len(counted["top"]) == 8


# ---- the sample is bounded by count and bytes, headers included -------------------------


def test_recorder_is_bounded_by_bytes_not_only_by_count() -> None:
    recorder = Recorder(max_records=10_000, max_body=64 * 1024, max_bytes=8 * 1024 * 1024)
    body = b"x" * 64 * 1024
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1_000):  # 64 MiB of bodies offered
            recorder.add("POST", f"/b/{i}", b"", [(b"host", b"h")], body, False)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert recorder.bytes <= 8 * 1024 * 1024
    assert 100 <= len(recorder.records) < 130 and recorder.seen == 1_000
    assert [r[1] for r in recorder.records][-1] == "/b/999"  # the newest are kept
    assert used < 9 * 1024 * 1024, f"{used / 2**20:.1f} MiB"


def test_record_headers_are_capped_and_flagged() -> None:
    recorder = Recorder(max_records=10, max_body=10, max_bytes=10 * 1024 * 1024)
    headers = [(b"x-big-%d" % i, b"v" * 1024 * 1024) for i in range(300)]  # 300 MiB asked
    record = recorder.add("GET", "/h", b"", headers, b"", False)
    kept = sum(len(k) + len(v) for k, v in record[3])
    assert kept <= MAX_HEADER_BYTES and record[8] is True
    assert recorder.bytes < MAX_HEADER_BYTES + 1024


def test_a_record_larger_than_the_byte_bound_is_counted_not_kept() -> None:
    recorder = Recorder(max_records=10, max_body=1024, max_bytes=600)
    recorder.add("POST", "/small", b"", [], b"a", False)
    recorder.add("POST", "/large", b"", [], b"b" * 1024, False)
    assert [r[1] for r in recorder.records] == ["/small"] and recorder.seen == 2


def test_pages_are_bounded_and_read_every_kept_record_once() -> None:
    recorder = Recorder(max_records=1_000, max_body=64 * 1024, max_bytes=64 * 1024 * 1024)
    for i in range(300):  # ~19 MiB of bodies: at least five pages of 4 MiB
        recorder.add("POST", f"/b/{i}", b"", [], bytes([i % 256]) * 64 * 1024, False)
    seen_paths, after, pages = [], 0, 0
    while True:
        page = recorder.page(after, upto=recorder.seen)
        pages += 1
        raw = sum(len(base64.b64decode(r["body_b64"])) for r in page["requests"])
        assert raw <= PAGE_BYTES
        seen_paths += [r["path"] for r in page["requests"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen_paths == [f"/b/{i}" for i in range(300)]
    assert pages >= 5


def test_recorded_requests_are_read_by_template_and_in_pages_over_http() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="t")

    async def scenario() -> tuple[list[str], dict]:
        async with await _client(stub) as client:
            for i in range(3):
                await client.get(f"/stock/{i}")
                await client.get(f"/other/{i}")
            page = await client.get("/__upstream__/requests", params={"path": "/stock/{sku}"})
            upto = await client.get("/__upstream__/requests", params={"upto": 2})
            return [r["path"] for r in page.json()["requests"]], upto.json()

    paths, upto = run(scenario())
    assert paths == ["/stock/0", "/stock/1", "/stock/2"]
    assert [r["path"] for r in upto["requests"]] == ["/stock/0", "/other/0"]


# ---- sync handlers run off the loop --------------------------------------------------------


def slow_sync(request):  # a handler that blocks its thread for 0.6 s
    time.sleep(0.6)
    return {"slept": True}


def test_slow_sync_handlers_overlap_and_the_control_api_answers_meanwhile() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="t")

    async def scenario() -> tuple[list[int], float, float, dict, float]:
        async with await _client(stub) as client:
            added = await client.post(
                "/__upstream__/routes",
                json={"method": "GET", "path": "/slow", "handler": f"{__name__}:slow_sync"},
            )
            assert added.status_code == 200, added.text
            start = time.perf_counter()
            await client.get("/slow")  # one alone: one handler call's time, here, now
            one = time.perf_counter() - start
            await client.post("/__upstream__/reset")
            start = time.perf_counter()
            calls = [asyncio.ensure_future(client.get("/slow")) for _ in range(2)]
            while stub.inflight_now < 2 and time.perf_counter() - start < 5:
                await asyncio.sleep(0.01)  # poll: both calls reached the stub
            stats_at = time.perf_counter()
            stats = (await client.get("/__upstream__/stats")).json()
            stats_s = time.perf_counter() - stats_at
            answers = await asyncio.gather(*calls)
            two = time.perf_counter() - start
            return [a.status_code for a in answers], one, two, stats, stats_s

    statuses, one, two, stats, stats_s = run(scenario())
    assert statuses == [200, 200]
    assert stub.gauge.peak_inflight == 2  # exact: both were in the handler at once
    assert stats["inflight_now"] == 2  # the control API answered while they slept
    # Ratios from the same run, wide margins (a noisy 2-core machine): serialised would be
    # ~2x one call; the stats call took far less than one handler call.
    assert two < 1.6 * one, f"two at once {two:.2f}s, one alone {one:.2f}s"
    assert stats_s < 0.5 * one, f"stats took {stats_s:.2f}s while handlers slept"


# ---- route headers and bodies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"x-a": "1\r\nx-b: 2"}, "holds CR, LF or NUL"),
        ({"x-a": "1\nx"}, "holds CR, LF or NUL"),
        ({"x a": "1"}, "is not an HTTP header name"),
        ({"x-a\r\n": "1"}, "is not an HTTP header name"),
        ({"Content-Length": "5"}, "'Content-Length' is set by the stub itself"),
        ({"transfer-encoding": "chunked"}, "is set by the stub itself"),
        ({"x-a": "€"}, "not Latin-1"),
    ],
)
def test_route_headers_that_would_break_framing_are_refused_at_creation(
    headers: dict, words: str
) -> None:
    with pytest.raises(RouteError) as refused:
        Route.from_spec({"method": "GET", "path": "/a", "headers": headers})
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_a_handler_returning_bad_headers_is_a_clear_500_cause() -> None:
    with pytest.raises(ValueError, match="StubResponse.headers: the value of 'x' holds CR"):
        handler_result(StubResponse(headers={"x": "a\r\nb"}))


def test_a_route_body_may_be_any_bytes_via_base64() -> None:
    raw = b"\xff\xfe\x00binary"
    route = Route.from_spec(
        {"method": "GET", "path": "/bin", "body_b64": base64.b64encode(raw).decode()}
    )
    assert route.static_answer({}) == raw
    with pytest.raises(RouteError, match="body_b64 is not valid base64"):
        Route.from_spec({"method": "GET", "path": "/bin", "body_b64": "***"})


def test_hang_is_a_switch_on_an_upstream_and_a_route() -> None:
    from pytest_fanout.limits import Behaviour, ConfigError
    from pytest_fanout.servers.routes import Route, RouteError

    behaviour = Behaviour()
    behaviour.update({"hang": True})
    assert behaviour.hang is True
    assert Behaviour.from_env(behaviour.to_env()).hang is True  # how a stub child reads it
    for bad in (3, "maybe", None):
        with pytest.raises(ConfigError, match="hang=.* must be true or false"):
            Behaviour().update({"hang": bad})
    assert Route.from_spec({"method": "GET", "path": "/x", "hang": True}).hang is True
    with pytest.raises(RouteError, match="hang=1 must be true or false"):
        Route.from_spec({"method": "GET", "path": "/x", "hang": 1})


def test_a_templated_answer_is_rendered_once_per_path_and_the_cache_is_bounded() -> None:
    """The stub keeps rendered answers (its throughput): the same bytes for the same path
    parameters, each path its own, at most ANSWER_CACHE_SIZE of them, none over the size cap."""
    from pytest_fanout.servers import routes

    route = routes.Route.from_spec(
        {"method": "GET", "path": "/items/{i}", "json": {"id": "{i}", "tag": "x-{i}"}}
    )
    first = route.static_answer({"i": "7"})
    assert json.loads(first) == {"id": "7", "tag": "x-7"}
    assert route.static_answer({"i": "7"}) is first  # rendered once
    assert json.loads(route.static_answer({"i": "8"})) == {"id": "8", "tag": "x-8"}
    for i in range(routes.ANSWER_CACHE_SIZE + 50):
        assert json.loads(route.static_answer({"i": str(i)}))["id"] == str(i)
    assert len(route.answers) == routes.ANSWER_CACHE_SIZE
    big = "y" * routes.ANSWER_CACHE_BYTES
    large = routes.Route.from_spec(
        {"method": "GET", "path": "/big/{i}", "json": {"v": big + "{i}"}}
    )
    assert json.loads(large.static_answer({"i": "1"})) == {"v": big + "1"}
    assert large.answers == {}  # too large to keep
