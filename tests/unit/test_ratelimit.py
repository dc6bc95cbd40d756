"""Rate limits on a stub (issue 33): the parser, the bucket's arithmetic on an injected
clock, the 429's headers, the retry facts, and the stub in-process."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from pytest_fanout.limits import Behaviour, ConfigError, default_burst, parse_rate
from pytest_fanout.measurement import Measurement, RetryWait
from pytest_fanout.servers.ratelimit import (
    Repeats,
    TokenBucket,
    asked_wait_s,
    reset_text,
)
from pytest_fanout.servers.upstream import StubUpstream
from pytest_fanout.spec import SpecError, StackSpec, UpstreamSpec, check_route, read_config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50/s", (50, 1.0)),
        ("3000/min", (3000, 60.0)),
        ("100/h", (100, 3600.0)),
        (" 5 / s", (5, 1.0)),
    ],
)
def test_parse_rate(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("fast", "is not a rate limit like '50/s'"),
        ("0/s", "must allow at least 1 call"),
        ("-1/s", "must allow at least 1 call"),
        ("5/fortnight", "is not a rate limit"),
        ("2000000/s", "above the limit of 1,000,000 calls/s"),
        (5, "is not a rate limit"),
    ],
)
def test_bad_rate_is_one_line_naming_the_key(text: object, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rate(text, "upstreams.quotes.rate_limit")
    message = str(caught.value)
    assert message.startswith("upstreams.quotes.rate_limit=")
    assert words in message
    assert "\n" not in message


def test_behaviour_checks_rate_and_burst() -> None:
    behaviour = Behaviour()
    with pytest.raises(ConfigError, match=r"^burst=10000000 must be between 0 and 1000000$"):
        behaviour.update({"rate_limit": "5/s", "burst": 10_000_000})
    with pytest.raises(ConfigError, match="burst=3 needs a rate_limit"):
        behaviour.update({"burst": 3})
    with pytest.raises(ConfigError, match="rate_limit='fast'"):
        behaviour.update({"rate_limit": "fast"})
    assert behaviour.rate_limit == "" and behaviour.burst == 0  # nothing half-applied
    behaviour.update({"rate_limit": "5/s", "burst": 5})
    assert Behaviour.from_env(behaviour.to_env()) == behaviour


def test_default_burst_is_one_seconds_worth() -> None:
    assert default_burst(50, 1.0) == 50
    assert default_burst(3000, 60.0) == 50
    assert default_burst(100, 3600.0) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_arithmetic() -> None:
    clock = Clock()
    bucket = TokenBucket("10/s", burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)  # one token in 1/10 s
    clock.now += 0.05
    assert bucket.take() == pytest.approx(0.05)
    clock.now += 0.05
    assert bucket.take() == 0.0  # refilled at the rate
    clock.now += 100  # never above the burst
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.1)
    bucket.refill()
    assert bucket.tokens == 3


def test_bucket_defaults_and_slow_rates() -> None:
    clock = Clock()
    bucket = TokenBucket("60/min", clock=clock)
    assert bucket.burst == 1
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)


def test_429_headers_have_openai_shapes() -> None:
    clock = Clock()
    bucket = TokenBucket("50/s", burst=50, clock=clock)
    for _ in range(50):
        bucket.take()
    wait = bucket.take()
    headers = dict((k.decode(), v.decode()) for k, v in bucket.headers(wait))
    assert headers == {
        "retry-after": "1",
        "retry-after-ms": "20",
        "x-ratelimit-limit-requests": "50",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    assert asked_wait_s(bucket.headers(wait)) == pytest.approx(0.02)
    assert asked_wait_s([(b"Retry-After", b"3")]) == 3.0
    assert asked_wait_s([(b"retry-after", b"Wed, 21 Oct 2015 07:28:00 GMT")]) is None
    assert [reset_text(s) for s in (0.02, 0.0001, 1, 1.2, 360, 3661)] == [
        "20ms",
        "1ms",
        "1s",
        "2s",
        "6m0s",
        "1h1m1s",
    ]


def _call(arrival: float, end: float, status: int, digest: int, asked: float | None = None):
    return [arrival, end, "GET", "/q", "", 0.0, status, digest, False, False, asked]


def test_repeats_counts_retries_and_waits() -> None:
    repeats = Repeats()
    first = _call(0.0, 0.001, 429, 1, asked=0.5)
    repeats.arrive(first)
    repeats.arrive(_call(0.0, 0.0, 0, 2))  # another call, still in flight
    repeats.arrive(_call(0.1, 0.2, 503, 1))  # a retry of the 429, 0.099 s later
    repeats.arrive(_call(0.3, 0.4, 200, 1))  # a retry of the 503
    repeats.arrive(_call(0.5, 0.6, 200, 1))  # a repeat of a 200: not a retry
    repeats.arrive(_call(0.5, 0.6, 200, 2))  # a duplicate of one in flight: not a retry
    stats = repeats.stats()
    assert stats["retries"] == 2
    assert stats["distinct"] == 2
    assert stats["most_retries"] == 2
    assert stats["retry_waits"] == [["GET", "/q", 0.5, pytest.approx(0.099)]]


def test_repeats_cut_calls_are_retried() -> None:
    repeats = Repeats()
    cut = _call(0.0, 0.1, 0, 7)
    cut[9] = True
    repeats.arrive(cut)
    repeats.arrive(_call(0.2, 0.3, 200, 7))
    assert repeats.retries == 1 and repeats.waits == []


def test_upstream_gauges_facts() -> None:
    m = Measurement(
        path="/x",
        samples=[0.5, 0.5],
        sample_windows=[(0.0, 0.5), (1.0, 1.5)],
        upstream_gauges={
            "quotes": {
                "requests": [10, 10],
                "rejected": [5, 5],
                "limited": [3, 5],
                "capped": [0, 0],
                "retries": [0, 2],
                "distinct": [10, 8],
                "most_retries": [0, 1],
                "delay_ms_sum": [100.0, 100.0],
            }
        },
        upstream_limits={"quotes": {"max_inflight": 0, "rate_limit": "5/s", "per_s": 5.0}},
        upstream_retry_waits={"quotes": [[1, "GET", "/q", 1.0, 0.01]]},
    )
    g = m.upstream("quotes")
    assert g.rejected == 10 and g.rejected_per_sample == [5, 5]
    assert g.limited == 8 and g.limited_per_sample == [3, 5]
    assert g.capped == 0 and g.capped_per_sample == [0, 0] and g.sources_known
    assert g.retries == 2 and g.most_retries == 1
    assert g.amplification == pytest.approx(20 / 18)
    assert g.retry_waits == [RetryWait(1, "GET", "/q", 1.0, 0.01)]
    assert g.retry_waits[0].early
    assert g.rate_limit == "5/s" and g.rate_limit_per_s == 5.0 and g.has_limit
    assert g.calls_per_s == pytest.approx(20.0)
    assert g.mean_latency_s == pytest.approx(0.02)
    again = Measurement.from_dict(m.to_dict()).upstream("quotes")
    assert again == g
    assert again.limited_per_sample == [3, 5] and again.capped_per_sample == [0, 0]
    del m.upstream_gauges["quotes"]["limited"], m.upstream_gauges["quotes"]["capped"]
    older = m.upstream("quotes")  # saved before the stub told its 429s apart
    assert older.limited == 0 and not older.sources_known


def _client(stub: StubUpstream) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=stub),
        base_url="http://stub",
        headers={"Authorization": f"Bearer {stub.token}"},
    )


def test_stub_answers_past_the_limit_at_once_and_refills_at_reset() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0, rate_limit="5/s", burst=5))

    async def scenario() -> tuple[list[int], dict, list[int]]:
        async with _client(stub) as client:
            answers = await asyncio.gather(*(client.get(f"/q/{i}") for i in range(10)))
            stats = (await client.get("/__upstream__/stats")).json()
            await client.post("/__upstream__/reset")
            again = await asyncio.gather(*(client.get(f"/q/{i}") for i in range(10)))
            limited = next(a for a in answers if a.status_code == 429)
            assert int(limited.headers["retry-after"]) >= 1
            assert int(limited.headers["retry-after-ms"]) >= 1
            assert limited.headers["x-ratelimit-limit-requests"] == "5"
            return (
                sorted(a.status_code for a in answers),
                stats,
                sorted(a.status_code for a in again),
            )

    first, stats, again = run(scenario())
    assert first == again == [200] * 5 + [429] * 5
    assert stats["rejected"] == stats["limited"] == 5 and stats["capped"] == 0
    assert stats["limits"] == {"max_inflight": 0, "rate_limit": "5/s", "per_s": 5.0, "burst": 5}
    assert stats["distinct"] == 10 and stats["retries"] == 0


def test_route_limit_and_a_routes_429_count_as_rejected() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0))

    async def scenario() -> tuple[list[int], list[int], dict]:
        async with _client(stub) as client:
            route = {"method": "GET", "path": "/limited", "rate_limit": "2/s"}
            assert (await client.post("/__upstream__/routes", json=route)).status_code == 200
            busy = {"method": "GET", "path": "/busy", "status": 429}
            assert (await client.post("/__upstream__/routes", json=busy)).status_code == 200
            limited = await asyncio.gather(*(client.get("/limited") for _ in range(4)))
            free = await asyncio.gather(*(client.get("/free") for _ in range(4)))
            await client.get("/busy")
            stats = (await client.get("/__upstream__/stats")).json()
            return [a.status_code for a in limited], [a.status_code for a in free], stats

    limited, free, stats = run(scenario())
    assert sorted(limited) == [200, 200, 429, 429]
    assert free == [200] * 4
    assert stats["rejected"] == 3  # two by the route's limit, one by the route's status
    assert stats["limited"] == 2 and stats["capped"] == 0  # only the limit's are "limited"
    assert stats["limits"]["routes"] == {
        "GET /limited": {"rate_limit": "2/s", "per_s": 2.0, "burst": 2}
    }
    assert stats["distinct"] == 3  # /limited, /free, /busy: the rest are repeats


def test_max_inflight_429s_are_capped_not_limited() -> None:
    stub = StubUpstream(Behaviour(delay_ms=50, max_inflight=2))

    async def scenario() -> tuple[list[int], dict]:
        async with _client(stub) as client:
            answers = await asyncio.gather(*(client.get(f"/q/{i}") for i in range(6)))
            stats = (await client.get("/__upstream__/stats")).json()
            return sorted(a.status_code for a in answers), stats

    answers, stats = run(scenario())
    assert answers == [200] * 2 + [429] * 4
    assert (stats["rejected"], stats["capped"], stats["limited"]) == (4, 4, 0)


def test_bad_route_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="rate_limit='0/s' must allow at least 1 call"):
        check_route({"method": "GET", "path": "/x", "rate_limit": "0/s"})
    with pytest.raises(ValueError, match="burst=2000000 must be between"):
        check_route({"method": "GET", "path": "/x", "rate_limit": "1/s", "burst": 2_000_000})


def test_spec_rate_limit_default_and_upstream_override() -> None:
    spec = StackSpec(rate_limit="50/s")
    spec.upstreams["a"] = UpstreamSpec("a", "A_URL")
    spec.upstreams["b"] = UpstreamSpec("b", "B_URL", behaviour={"rate_limit": "5/s"})
    behaviours = spec.behaviours()
    assert behaviours["a"].rate_limit == "50/s"
    assert behaviours["b"].rate_limit == "5/s"
    bad = StackSpec()
    bad.upstreams["q"] = UpstreamSpec(
        "q", "Q_URL", behaviour={"rate_limit": "fast"}, where="[tool.fanout.upstreams.q]"
    )
    with pytest.raises(SpecError, match=r"^\[tool.fanout.upstreams.q\]: rate_limit='fast'"):
        bad.check()


def test_toml_tables_and_routes_take_a_rate_limit(tmp_path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text(
        """
[tool.fanout]
rate_limit = "100/s"

[tool.fanout.upstreams.quotes]
env = "QUOTES_URL"
rate_limit = "3000/min"
burst = 10
routes = [{ method = "GET", path = "/q/{i}", rate_limit = "5/s" }]

[tool.fanout.upstreams.other]
env = "OTHER_URL"
"""
    )
    spec = read_config(config).check()
    behaviours = spec.behaviours()
    assert (behaviours["quotes"].rate_limit, behaviours["quotes"].burst) == ("3000/min", 10)
    assert behaviours["other"].rate_limit == "100/s"
    assert spec.routes()["quotes"][0]["rate_limit"] == "5/s"
    config.write_text(
        '[tool.fanout.upstreams.q]\nenv = "Q_URL"\nroutes = [{ method = "GET", path = "/x",'
        ' rate_limit = "-1/s" }]\n'
    )
    with pytest.raises(SpecError, match=r"routes\[0\]: rate_limit='-1/s' must allow at least"):
        read_config(config)


def run(coro):
    return asyncio.run(coro)


def test_a_client_paced_at_the_limit_is_within_it_whatever_its_hop() -> None:
    # aiolimiter's AsyncLimiter(5, 1) against 5/s: five at once, then one each 200 ms on the
    # client's clock; each reaches the stub a hop late that varies by a few ms (busy machine).
    clock = Clock()
    bucket = TokenBucket("5/s", clock=clock)
    start, hops = clock.now, [0.004, 0.001, 0.003, 0.0005, 0.002, 0.0045]
    sent = [0.0] * 5 + [0.2 * k for k in range(1, 20)]
    refused = 0
    for i, at in enumerate(sent):
        clock.now = start + at + hops[i % len(hops)]
        refused += bucket.take() > 0
    assert refused == 0
    # Faster than the limit by 10% for 20 s: refused, the rate over the stretch stays exact.
    bucket.refill()
    start, refused = clock.now, 0
    for k in range(110):
        clock.now = start + k * (20 / 110)
        refused += bucket.take() > 0
    assert 5 <= refused <= 6  # 110 sent in 20 s where 5 + 100 are allowed
