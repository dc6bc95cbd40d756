"""The stub upstream as an ASGI app, in-process: gauge, control paths, caps, overrides."""

from __future__ import annotations

import asyncio
import statistics
import tracemalloc
from collections.abc import Callable

import httpx2
import pytest

from pytest_fanout.limits import Behaviour, ConfigError
from pytest_fanout.servers.recorder import Recorder
from pytest_fanout.servers.upstream import StubUpstream


def run(coro):
    return asyncio.run(coro)


async def _client(stub: StubUpstream) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=stub),
        base_url="http://stub",
        headers={"Authorization": f"Bearer {stub.token}"},
    )


def test_gauge_counts_requests_and_peak() -> None:
    stub = StubUpstream(Behaviour(delay_ms=20))

    async def scenario() -> dict:
        async with await _client(stub) as client:
            await asyncio.gather(*(client.get(f"/items/{i}") for i in range(6)))
            return (await client.get("/__upstream__/stats")).json()

    stats = run(scenario())
    assert stats["requests"] == 6
    assert stats["peak_inflight"] == 6
    assert stats["inflight"] == 0
    assert stats["completed"] == 6


def test_cap_answers_429_at_once() -> None:
    stub = StubUpstream(Behaviour(delay_ms=30, max_inflight=2))

    async def scenario() -> list[int]:
        async with await _client(stub) as client:
            answers = await asyncio.gather(*(client.get("/x") for _ in range(5)))
            return sorted(a.status_code for a in answers)

    assert run(scenario()) == [200, 200, 429, 429, 429]
    assert stub.gauge.rejected == 3
    assert stub.gauge.peak_inflight == 2


def test_query_overrides_delay_and_status() -> None:
    stub = StubUpstream(Behaviour(delay_ms=10_000))

    async def scenario() -> int:
        async with await _client(stub) as client:
            return (await client.get("/x?delay_ms=0&status=503")).status_code

    assert run(scenario()) == 503
    assert stub.gauge.errors == 1


def test_config_and_reset() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0))

    async def scenario() -> tuple[int, dict, dict]:
        async with await _client(stub) as client:
            await client.get("/x")
            bad = await client.post("/__upstream__/config", json={"error_rate": 3})
            good = await client.post("/__upstream__/config", json={"jitter_ms": 5})
            reset = await client.post("/__upstream__/reset")
            return bad.status_code, good.json(), reset.json()

    bad, config, stats = run(scenario())
    assert bad == 422
    assert config["jitter_ms"] == 5.0 and config["error_rate"] == 0.0
    assert stats["requests"] == 0


def test_error_rate_one_fails_every_call() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0, error_rate=1, error_status=503))

    async def scenario() -> set[int]:
        async with await _client(stub) as client:
            return {(await client.get(f"/i/{i}")).status_code for i in range(5)}

    assert run(scenario()) == {503}


@pytest.mark.parametrize(
    "changes",
    [
        {"delay_ms": -1},
        {"error_rate": 1.5},
        {"error_status": 99},
        {"colour": "red"},
        {"max_inflight": "many"},
        {"delay_ms": float("inf")},
        {"jitter_ms": float("nan")},
        {"max_inflight": float("inf")},
        {"p99_ms": 3},
        {"error_status": "5xx"},
    ],
)
def test_bad_behaviour_is_refused_whole(changes: dict) -> None:
    behaviour = Behaviour(delay_ms=7)
    with pytest.raises(ConfigError) as refused:
        behaviour.update({"jitter_ms": 3, **changes})
    assert "\n" not in str(refused.value)
    assert behaviour.jitter_ms == 0 and behaviour.delay_ms == 7


def test_env_round_trip() -> None:
    behaviour = Behaviour(delay_ms=12, max_inflight=4)
    assert Behaviour.from_env(behaviour.to_env()) == behaviour


# ---- the gauge across resets (issue 11, item 1) -----------------------------------------


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll the stub's own counter until `check` holds; fail after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.005)


def test_reset_while_calls_are_in_flight_keeps_every_gauge_exact() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="t")

    async def scenario() -> tuple[dict, dict, dict]:
        async with await _client(stub) as client:
            slow = [asyncio.create_task(client.get("/x?delay_ms=200")) for _ in range(5)]
            await _until(lambda: stub.inflight_now >= 5)
            after_reset = (await client.post("/__upstream__/reset")).json()
            await asyncio.gather(*(client.get(f"/y/{i}?delay_ms=20") for i in range(3)))
            during = (await client.get("/__upstream__/stats")).json()
            await asyncio.gather(*slow)
            return after_reset, during, (await client.get("/__upstream__/stats")).json()

    after_reset, during, end = run(scenario())
    assert after_reset["inflight"] == 0 and after_reset["inflight_now"] == 5
    assert during["peak_inflight"] == 3 and during["requests"] == 3  # the 5 old calls excluded
    assert end["inflight"] == 0 and end["inflight_now"] == 0  # not stuck at 5 for good


def test_reset_waits_for_idle_when_asked() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="t")

    async def scenario() -> tuple[dict, dict]:
        async with await _client(stub) as client:
            slow = [asyncio.create_task(client.get("/x?delay_ms=100")) for _ in range(4)]
            await _until(lambda: stub.inflight_now >= 4)
            waited = (await client.post("/__upstream__/reset?wait_idle_s=5")).json()
            short = [asyncio.create_task(client.get("/x?delay_ms=2000")) for _ in range(2)]
            await _until(lambda: stub.inflight_now >= 2)
            gave_up = (await client.post("/__upstream__/reset?wait_idle_s=0.05")).json()
            for task in [*slow, *short]:
                task.cancel()
            return waited, gave_up

    waited, gave_up = run(scenario())
    assert waited["in_flight_before"] == 4 and waited["idle"] is True
    assert waited["inflight_now"] == 0
    assert gave_up["in_flight_before"] == 2 and gave_up["idle"] is False


# ---- routes --------------------------------------------------------------------------------


def _routed(stub: StubUpstream, client: httpx2.AsyncClient, **spec: object):
    return client.post("/__upstream__/routes", json=spec)


def test_route_template_substitutes_path_parameters_in_json() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="t")

    async def scenario() -> tuple[dict, dict, int]:
        async with await _client(stub) as client:
            added = await _routed(
                stub,
                client,
                method="GET",
                path="/stock/{sku}/{store}",
                json={"sku": "{sku}", "where": ["{store}", 3], "n": 3},
            )
            assert added.status_code == 200, added.text
            hit = (await client.get("/stock/ab-1/paris")).json()
            miss = (await client.get("/stock/ab-1")).json()  # unmatched: the default answer
            post = (await client.post("/stock/ab-1/paris")).status_code
            return hit, miss, post

    hit, miss, post = run(scenario())
    assert hit == {"sku": "ab-1", "where": ["paris", 3], "n": 3}
    assert miss == {"ok": True}
    assert post == 200  # another method: the default answer too


def test_route_settings_left_none_follow_the_behaviour() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0, error_rate=1, error_status=503), token="t")

    async def scenario() -> tuple[int, int]:
        async with await _client(stub) as client:
            await _routed(stub, client, method="GET", path="/a", json={"a": 1})
            await _routed(stub, client, method="GET", path="/b", json={"b": 1}, error_rate=0)
            return (await client.get("/a")).status_code, (await client.get("/b")).status_code

    assert run(scenario()) == (503, 200)


def test_recorded_requests_keep_bodies_in_order() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0, record_body_bytes=8), token="t")

    async def scenario() -> list[dict]:
        async with await _client(stub) as client:
            await client.post("/quote", json={"a": 1})
            await client.get("/stock/1?x=2")
            await client.put("/big", content=b"0123456789abcdef")
            return (await client.get("/__upstream__/requests")).json()["requests"]

    records = run(scenario())
    assert [(r["method"], r["path"], r["query"]) for r in records] == [
        ("POST", "/quote", ""),
        ("GET", "/stock/1", "x=2"),
        ("PUT", "/big", ""),
    ]
    assert records[2]["body_truncated"] is True


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"method": "GET", "path": "stock"}, "must start with '/'"),
        ({"method": "GET", "path": "/stock/{sku"}, "unmatched brace"),
        ({"method": "GET", "path": "/stock/{1sku}"}, "is not a parameter name"),
        ({"method": "GET", "path": "/a/{x}/{x}"}, "appears twice"),
        ({"method": "FETCH", "path": "/a"}, "method 'FETCH' is not one of GET, POST"),
        ({"method": "GET", "path": "/a", "status": 99}, "status 99 is not an HTTP status"),
        ({"method": "GET", "path": "/a", "status": True}, "is not an HTTP status"),
        ({"method": "GET", "path": "/a", "delay_ms": -1}, "delay_ms=-1 must be a finite"),
        ({"method": "GET", "path": "/a", "delay_ms": 10, "p99_ms": 5}, "p99_ms needs"),
        ({"method": "GET", "path": "/a", "error_rate": 2}, "error_rate=2 must be"),
        ({"method": "GET", "path": "/a", "handler": "no_such_module:f"}, "does not import"),
        ({"method": "GET", "path": "/a", "handler": "json:nope"}, "does not import"),
        ({"method": "GET", "path": "/a", "handler": "json:__doc__"}, "is not callable"),
        ({"method": "GET", "path": "/a", "colour": "red"}, "unknown route setting(s): colour"),
        ({"method": "GET", "path": "/a", "json": {}, "body": "x"}, "not both"),
    ],
)
def test_bad_routes_are_one_line_422(spec: dict, words: str) -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="t")

    async def scenario() -> httpx2.Response:
        async with await _client(stub) as client:
            return await client.post("/__upstream__/routes", json=spec)

    response = run(scenario())
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert words in detail and "\n" not in detail
    assert stub.routes == []


# ---- the control API refuses bad input --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("config", b'{"delay_ms": Infinity}', 422, "Infinity is not valid JSON"),
        ("config", b'{"delay_ms": NaN}', 422, "NaN is not valid JSON"),
        ("config", b'{"max_inflight": 1e309}', 422, "must be a finite number"),
        ("config", b'{"max_inflight": 1.5}', 422, "must be a whole number"),
        ("config", b'{"max_inflight": 10000000}', 422, "must be between 0 and 1000000"),
        ("config", b'{"delay_ms": 1e12}', 422, "must be between 0 and 3600000"),
        ("config", b'{"delay_ms": true}', 422, "is not a number"),
        ("config", b"[" * 100_000 + b"]" * 100_000, 422, "nested too deeply"),
        ("config", b"[1, 2]", 422, "must be a JSON object"),
        ("config", b"{", 422, "not valid JSON"),
        ("config", b" " * (2 * 1024 * 1024), 413, "control body over 1048576 bytes"),
        ("routes", b'{"method": "GET", "path": "/a", "json": {"x": NaN}}', 422, "NaN"),
    ],
    ids=[
        "inf",
        "nan",
        "overflow",
        "fraction",
        "too-many",
        "huge-delay",
        "bool",
        "deep",
        "not-object",
        "broken",
        "too-big",
        "route-nan",
    ],
)
def test_control_bodies_are_checked(path: str, body: bytes, status: int, words: str) -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="t")

    async def scenario() -> httpx2.Response:
        async with await _client(stub) as client:
            return await client.post(f"/__upstream__/{path}", content=body)

    response = run(scenario())
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert stub.behaviour == Behaviour(delay_ms=0)


@pytest.mark.parametrize(
    "query",
    [
        "delay_ms=inf",
        "delay_ms=nan",
        "delay_ms=-5",
        "delay_ms=abc",
        "status=99",
        "status=1e9",
        "delay_ms=1e300",
    ],
)
def test_bad_query_parameters_are_422(query: str) -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="t")

    async def scenario() -> httpx2.Response:
        async with await _client(stub) as client:
            return await client.get(f"/items/1?{query}")

    response = run(scenario())
    assert response.status_code == 422
    name = query.split("=")[0]
    assert response.json()["detail"].startswith(f"{name}=")


def test_control_paths_need_the_token() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0), token="right")

    async def scenario() -> list[int]:
        transport = httpx2.ASGITransport(app=stub)
        async with httpx2.AsyncClient(transport=transport, base_url="http://stub") as client:
            return [
                (await client.get("/__upstream__/stats")).status_code,
                (
                    await client.get(
                        "/__upstream__/stats", headers={"Authorization": "Bearer wrong"}
                    )
                ).status_code,
                (
                    await client.post(
                        "/__upstream__/routes",
                        json={"method": "GET", "path": "/a", "handler": "os:system"},
                    )
                ).status_code,
                (
                    await client.get(
                        "/__upstream__/stats", headers={"Authorization": "Bearer right"}
                    )
                ).status_code,
            ]

    assert run(scenario()) == [403, 403, 403, 200]
    assert stub.routes == []  # no handler was loaded from the request without the token


# ---- log-normal delay and the recorder's bound ------------------------------------------


def test_log_normal_route_delay_has_the_asked_median_and_p99() -> None:
    """2,000 answers of a route with delay_ms=20, p99_ms=80: the delays the stub served
    (recorded exactly, per request) have a median and a 99th percentile within 10%."""
    stub = StubUpstream(Behaviour(delay_ms=0, seed=12345), token="t")

    async def scenario() -> list[float]:
        async with await _client(stub) as client:
            await _routed(
                stub,
                client,
                method="GET",
                path="/slow/{i}",
                json={"i": "{i}"},
                delay_ms=20,
                p99_ms=80,
            )
            limits = asyncio.Semaphore(500)

            async def one(i: int) -> int:
                async with limits:
                    return (await client.get(f"/slow/{i}")).status_code

            codes = await asyncio.gather(*(one(i) for i in range(2000)))
            assert codes == [200] * 2000
            records = (await client.get("/__upstream__/requests")).json()["requests"]
            return [r["delay_ms"] for r in records]

    delays = sorted(run(scenario()))
    assert len(delays) == 2000
    median = statistics.median(delays)
    p99 = delays[int(0.99 * len(delays)) - 1]
    assert median == pytest.approx(20, rel=0.10)
    assert p99 == pytest.approx(80, rel=0.10)


def test_recorder_memory_stays_within_its_bound_after_200000_requests() -> None:
    recorder = Recorder(max_records=10_000, max_body=1024)
    headers = [(b"host", b"127.0.0.1:8001"), (b"content-type", b"application/json")]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200_000):
            body = b'{"sku": "%d"}' % i
            recorder.add("POST", f"/quote/{i}", b"x=1", list(headers), body, False)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(recorder.records) == 10_000 and recorder.seen == 200_000
    # Each record: its list, a path, a query, a header list with two pairs, a small body.
    assert used < 10_000 * 1_500, f"{used / 1e6:.1f} MB for 10,000 records"
