"""Issue 33's findings on rate-limited upstreams, from the stub's exact facts: rate exceeded,
a retry storm, Retry-After ignored, and two retry layers that multiply (the schedule read
off the waits between one call's tries); built Measurements, as a saved run holds them."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_fanout.assertions import FanoutAssertionError, assert_within_limits
from pytest_fanout.diagnosis import KINDS, NAMES, diagnose, retry_layers
from pytest_fanout.measurement import Measurement

LIMIT = {"max_inflight": 0, "rate_limit": "5/s", "per_s": 5.0, "burst": 5}


def make(
    *,
    requests: int = 10,
    rejected: int = 5,
    retries: int = 0,
    distinct: int = 10,
    most: int = 0,
    waits: list[list[Any]] | None = None,
    waves: list[int] | None = None,
    limits: dict[str, Any] | None = None,
    samples: int = 3,
    limited: int | None = None,
    capped: int = 0,
) -> Measurement:
    limits = LIMIT if limits is None else limits
    if limited is None:  # a limit's 429s when there is one, else the upstream's own
        limited = rejected - capped if limits.get("rate_limit") or limits.get("routes") else 0
    gauges = {
        "requests": [requests] * samples,
        "peak_inflight": [requests] * samples,
        "connections": [0] * samples,
        "rejected": [rejected] * samples,
        "limited": [limited] * samples,
        "capped": [capped] * samples,
        "errors": [0] * samples,
        "retries": [retries] * samples,
        "distinct": [distinct] * samples,
        "most_retries": [most] * samples,
    }
    return Measurement(
        path="/quotes",
        samples=[0.1] * samples,
        n=None,
        concurrency=None,
        upstream_gauges={"quotes": gauges},
        structure={"quotes": waves} if waves is not None else {},
        upstream_limits={"quotes": limits},
        upstream_retry_waits={"quotes": waits or []},
    )


def found(m: Measurement) -> dict[str, str]:
    return {f.kind: f.message for f in diagnose(m)}


def test_every_new_kind_has_its_name_and_a_place_in_the_order() -> None:
    for kind in ("rate-exceeded", "retry-storm", "retry-after-ignored", "retry-amplification"):
        assert kind in KINDS and NAMES[kind]


def test_a_semaphore_against_a_rate_limit_is_named_with_its_numbers() -> None:
    messages = found(make(waves=[4, 4, 2]))
    assert "upstream-429" not in messages  # said once, as what it is
    assert messages["rate-exceeded"] == (
        "rate exceeded: the upstream allows 5/s (burst 5) and answered 429 to 5 of 10 calls "
        "in every sample: the service keeps 4 calls in flight at once (held waves [4, 4, 2]): "
        "a semaphore or a thread pool bounds how many calls are in flight, not how many per "
        "second; pace the calls with one rate limiter that every request shares (aiolimiter's "
        "AsyncLimiter(5, 1); in threads, one thread-safe limiter of 5 calls per 1 s)"
    )


def test_a_gather_against_a_per_minute_limit_names_the_rate_not_a_semaphore() -> None:
    limits = {"max_inflight": 0, "rate_limit": "3000/min", "per_s": 50.0, "burst": 50}
    message = found(make(waves=[10], limits=limits))["rate-exceeded"]
    assert "semaphore" not in message and "sends faster than the limit" in message
    assert "AsyncLimiter(3000, 60)" in message


@pytest.mark.parametrize(
    ("limit", "per_s", "advice"),
    [
        (
            "100/hour",
            100 / 3600,
            "AsyncLimiter(100, 3600); in threads, one thread-safe limiter of 100 calls per 3600 s",
        ),
        ("100/h", 100 / 3600, "AsyncLimiter(100, 3600)"),
        ("20/sec", 20.0, "AsyncLimiter(20, 1)"),
        ("30/m", 0.5, "AsyncLimiter(30, 60)"),
    ],
)
def test_the_advised_limiter_has_the_limits_own_period(limit: str, per_s: float, advice: str):
    """Every unit a limit may be written in ("100/hour" was advised as AsyncLimiter(100, 1):
    3600 times the rate the upstream allows), in the finding and in the assertion."""
    limits = {"max_inflight": 0, "rate_limit": limit, "per_s": per_s, "burst": 1}
    m = make(waves=[10], limits=limits)
    assert advice in found(m)["rate-exceeded"]
    with pytest.raises(FanoutAssertionError) as caught:
        assert_within_limits(m)
    assert advice in str(caught.value)


def test_calls_one_after_another_then_a_gather_are_no_semaphore() -> None:
    message = found(make(waves=[1, 1, 10]))["rate-exceeded"]
    assert "semaphore" not in message and "sends faster than the limit" in message
    assert "keeps" not in message


def test_a_route_limit_is_named_with_its_route() -> None:
    limits = {"max_inflight": 0, "routes": {"GET /quote/{i}": LIMIT}}
    message = found(make(limits=limits))["rate-exceeded"]
    assert message.startswith("rate exceeded: the upstream allows 5/s on GET /quote/{i} and")


def test_429s_without_a_limit_stay_upstream_429() -> None:
    messages = found(make(limits={"max_inflight": 0}))
    assert "rate-exceeded" not in messages and "upstream-429" in messages


def test_only_the_limits_429s_are_blamed_on_the_limit() -> None:
    """A route that answers 429 by its own status at a rate-limited upstream: its 429s are
    upstream 429s; rate exceeded counts only the bucket's."""
    messages = found(make(rejected=7, limited=3))
    assert messages["rate-exceeded"].startswith(
        "rate exceeded: the upstream allows 5/s (burst 5) and answered 429 to 3 of 10 calls "
        "in every sample"
    )
    assert messages["upstream-429"] == (
        "upstream 429: the upstream refused 12 of 30 calls with 429 by its "
        "own answer (a route's status or a handler: out of quota, or overloaded): back off as "
        "its Retry-After says, and bound the retries"
    )


def test_a_routes_429s_alone_at_a_limited_upstream_are_not_rate_exceeded() -> None:
    messages = found(make(rejected=5, limited=0))
    assert "rate-exceeded" not in messages
    assert "refused 15 of 30 calls with 429 by its own answer" in messages["upstream-429"]


def test_max_inflight_429s_name_the_cap_not_the_limit() -> None:
    limits = {"max_inflight": 3}
    messages = found(make(rejected=5, capped=5, limits=limits))
    assert "rate-exceeded" not in messages
    assert messages["upstream-429"] == (
        "upstream 429: the upstream refused 15 of 30 calls with 429 by its "
        "cap of 3 in flight: no backpressure? bound the fan-out (a semaphore) or retry with "
        "backoff"
    )
    both = found(make(rejected=5, capped=2, limits={**LIMIT, "max_inflight": 3}))
    assert "answered 429 to 3 of 10 calls" in both["rate-exceeded"]
    assert "6 of 30 calls with 429 by its cap of 3 in flight" in both["upstream-429"]
    mixed = found(make(rejected=5, limited=1, capped=2, limits={**LIMIT, "max_inflight": 3}))
    assert "answered 429 to 1 of 10 calls" in mixed["rate-exceeded"]
    assert mixed["upstream-429"].startswith(
        "upstream 429: the upstream refused 12 of 30 calls with 429: 6 by its cap of 3 in "
        "flight, 6 by its own answer"
    )


def test_429s_saved_before_they_were_told_apart_name_no_limit() -> None:
    m = make()
    for name in ("limited", "capped"):
        del m.upstream_gauges["quotes"][name]
    messages = found(m)
    assert "rate-exceeded" not in messages
    assert "(the record does not say what answered them)" in messages["upstream-429"]


def storm(waited_s: float, asked_s: float | None = 0.2) -> Measurement:
    waits = [
        [sample, "GET", f"/quote/{i}", asked_s, waited_s]
        for sample in range(3)
        for i in range(5)
        for _ in range(3)
    ]
    return make(requests=25, rejected=20, retries=15, distinct=10, most=3, waits=waits)


def test_immediate_retries_are_a_storm_and_not_also_retry_after_ignored() -> None:
    messages = found(storm(0.002))
    assert messages["retry-storm"].startswith(
        "retry storm: the upstream got 45 retries in 3 samples (amplification 2.50: 2.50 "
        "calls for each distinct call); 45 of them came within 2 ms of its 429 (it asked for "
        "200 ms): no backoff"
    )
    assert "retry-after-ignored" not in messages
    assert "retry-amplification" not in messages  # 4 tries of one call: one layer's worth


def test_a_retry_that_waits_less_than_asked_ignores_retry_after() -> None:
    messages = found(storm(0.1))
    assert "retry-storm" not in messages
    assert messages["retry-after-ignored"].startswith(
        "retry-after ignored: 45 of 45 retries to the upstream came sooner than the wait their "
        "429 asked for (e.g. GET /quote/0 100 ms after its 429, which asked for 200 ms)"
    )


def test_retries_that_wait_what_was_asked_are_no_retry_finding() -> None:
    messages = found(storm(0.2))
    assert not {"retry-storm", "retry-after-ignored", "retry-amplification"} & set(messages)


@pytest.mark.parametrize(
    ("gaps", "layers"),
    [
        ([0.02, 0.02, 5.0, 0.02, 0.02, 5.0, 0.02, 0.02], (3, 3)),
        ([0.5, 1.0, 7.0] * 5 + [0.5, 1.0], (3, 6)),
        ([0.1] * 8, None),
        ([0.1, 0.2, 0.4, 0.8], None),
    ],
)
def test_the_schedule_of_two_layers_is_read_off_the_waits(
    gaps: list[float], layers: tuple[int, int] | None
) -> None:
    assert retry_layers(gaps) == layers


def test_eighteen_calls_for_one_are_named_with_their_schedule() -> None:
    """The issue's labelling backend: tenacity (6 attempts, ~7 s apart) around an OpenAI
    client that tries 3 times (0.5 s, 1 s backoff): 18 calls for one."""
    gaps = [0.5, 1.0, 7.0] * 5 + [0.5, 1.0]
    waits = [[0, "POST", "/v1/chat/completions", 0.5, gap] for gap in gaps]
    m = make(requests=18, rejected=18, retries=17, distinct=1, most=17, waits=waits, samples=1)
    message = found(m)["retry-amplification"]
    assert message.startswith(
        "retry amplification: 18 calls for one: 3 tries x 6 attempts, 44 s to the upstream "
        "(17 retries in 1 sample, amplification 18.00): two retry layers multiply"
    )
    # The same 18 tries, evenly spaced: more than one layer's worth, no schedule to name.
    even = [[0, "POST", "/v1/chat/completions", 0.5, 0.6] for _ in gaps]
    m = make(requests=18, rejected=18, retries=17, distinct=1, most=17, waits=even, samples=1)
    assert "18 calls for one over 10 s to the upstream" in found(m)["retry-amplification"]
