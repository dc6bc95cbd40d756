"""Rate-limited stubs with real processes (issue 33): exact 429 counts per sample, samples
alike (each starts with the bucket full), retries counted exactly, and the two assertions
on a service that retries at once (caught) and one that waits Retry-After (passes).

The service is `ratelimit_app/quotes.py`. Exact counts only: a limit of 5 per minute
refills a token every 12 s, so nothing refills within a sample however loaded the runner."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.assertions import FanoutAssertionError, assert_backs_off, assert_within_limits
from pytest_fanout.diagnosis import diagnose
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import MeasurementError, Request
from pytest_fanout.servers import Stack
from pytest_fanout.servers.process import tls_context
from tests.helpers import measure_stack

APP_DIR = Path(__file__).parent / "ratelimit_app"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    behaviour = Behaviour(delay_ms=20, rate_limit="5/min", burst=5)
    with Stack("quotes:app", app_dir=APP_DIR, behaviour=behaviour) as stack:
        yield stack


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        yield client


def test_ten_at_once_against_five_exactly_five_rejected_per_sample(stack, client) -> None:
    m = measure_stack(stack, client, "/gather/10", repeat=3)
    g = m.upstream()
    assert g.requests_per_sample == [10, 10, 10]
    assert g.rejected_per_sample == [5, 5, 5]  # each sample starts with the bucket full
    assert g.limited_per_sample == [5, 5, 5] and g.capped_per_sample == [0, 0, 0]
    found = {f.kind: f.message for f in diagnose(m)}
    assert "answered 429 to 5 of 10 calls in every sample" in found["rate-exceeded"]
    assert "upstream-429" not in found  # every 429 was the limit's
    assert g.retries == 0 and g.amplification == 1.0
    assert g.rate_limit == "5/min" and g.limits["burst"] == 5
    assert m.waves() == [10]  # the held probe is not limited: the code's structure
    with pytest.raises(FanoutAssertionError) as caught:
        assert_within_limits(m)
    message = str(caught.value)
    assert "(10 at once, " in message
    assert "to 'default', which allows 5/min: 15 of 30 answered 429" in message
    assert "semaphore" not in message
    assert "AsyncLimiter(5, 60)" in message
    assert_backs_off(m)  # no retries: nothing came early


def test_semaphore_is_named_a_semaphore(stack, client) -> None:
    m = measure_stack(stack, client, "/semaphore/10")
    assert m.upstream().rejected_per_sample == [5, 5]
    assert m.waves() == [5, 5]
    with pytest.raises(
        FanoutAssertionError, match="a semaphore or a thread pool bounds how many calls"
    ):
        assert_within_limits(m)


def test_immediate_retries_counted_exactly_and_caught(stack, client) -> None:
    m = measure_stack(stack, client, "/retry-now/10")
    g = m.upstream()
    # 5 calls pass; the other 5 are retried 3 times each, at once, and refused each time.
    assert g.requests_per_sample == [25, 25]
    assert g.rejected_per_sample == [20, 20]
    assert g.retries_per_sample == [15, 15]
    assert g.most_retries == 3
    assert g.amplification == pytest.approx(2.5)
    assert len(g.retry_waits) == 30
    assert all(w.asked_s is not None and w.waited_s < w.asked_s for w in g.retry_waits)
    with pytest.raises(FanoutAssertionError) as caught:
        assert_backs_off(m)
    message = str(caught.value)
    assert "30 of 30 retries of a 429 came before the wait it asked for: GET /quote/" in message
    assert "(asked 12.0 s)" in message
    with pytest.raises(FanoutAssertionError, match="retried 3 times \\(max_retries=2\\)"):
        assert_backs_off(m, max_retries=2)


def test_waiting_retry_after_passes(client) -> None:
    behaviour = Behaviour(delay_ms=20, rate_limit="10/s", burst=5)
    with Stack("quotes:app", app_dir=APP_DIR, behaviour=behaviour) as stack:
        m = measure_stack(stack, client, "/retry-after/10", repeat=1, warmup=0)
    g = m.upstream()
    # 5 refused, each waits its whole-second Retry-After: the bucket is full again by then.
    assert g.rejected_per_sample == [5]
    assert g.retries_per_sample == [5]
    assert all(0 < w.asked_s <= 0.1 for w in g.retry_waits)  # a token at 10/s: <= 100 ms
    assert all(w.waited_s >= 1.0 for w in g.retry_waits)
    assert_backs_off(m)
    # The 5 retries waited and were answered; the 429s went to the first tries.
    retried = r"5 of 15 answered 429 \(5 of the 15 calls were retries\)"
    with pytest.raises(FanoutAssertionError, match=retried):
        assert_within_limits(m)


def test_a_routes_own_429s_are_not_blamed_on_the_limit(client) -> None:
    """A rate limit (5/min, burst 5) and a route answering 429 by its status: the two /busy
    calls take 2 tokens and are answered 429 by the route; of the 10 gathered after them 3
    get the tokens left, 7 are refused by the limit. Only those 7 are the limit's."""
    behaviour = Behaviour(delay_ms=20, rate_limit="5/min", burst=5)
    busy = {"default": [{"method": "GET", "path": "/busy/{i}", "status": 429}]}
    with Stack("quotes:app", app_dir=APP_DIR, behaviour=behaviour, routes=busy) as stack:
        m = measure_stack(stack, client, "/mixed/10")
    g = m.upstream()
    assert g.requests_per_sample == [12, 12]
    assert g.rejected_per_sample == [9, 9]  # every 429, whatever answered it
    assert g.limited_per_sample == [7, 7] and g.capped_per_sample == [0, 0]
    found = {f.kind: f.message for f in diagnose(m)}
    assert "answered 429 to 7 of 12 calls in every sample" in found["rate-exceeded"]
    assert "semaphore bounds" not in found["rate-exceeded"]  # held waves [1, 1, 10]: none
    assert found["upstream-429"].startswith(
        "upstream 429: the upstream refused 4 of 24 calls with 429 by its own answer"
    )
    with pytest.raises(FanoutAssertionError) as caught:
        assert_within_limits(m)
    message = str(caught.value)
    assert "which allows 5/min: 14 of 24 answered 429; 4 answered 429 by its own answer" in (
        message
    )
    assert "9 of 24" not in message and "18 of 24" not in message


def test_a_max_inflight_cap_names_the_cap_not_a_rate(client) -> None:
    """max_inflight=3, no rate limit: 10 calls at once, the 7 past the cap answered 429 by
    it (each call is held 500 ms, far longer than sending 10 takes); a semaphore of 5
    under a cap of 6 (its fix) gets no 429."""
    behaviour = Behaviour(delay_ms=500, max_inflight=3)
    with Stack("quotes:app", app_dir=APP_DIR, behaviour=behaviour) as stack:
        m = measure_stack(stack, client, "/gather/10")
        stack.upstreams["default"].configure(max_inflight=6)
        fixed = measure_stack(stack, client, "/semaphore/10")
    g = m.upstream()
    assert g.rejected_per_sample == g.capped_per_sample == [7, 7]
    assert g.limited_per_sample == [0, 0]
    found = {f.kind: f.message for f in diagnose(m)}
    assert "rate-exceeded" not in found
    assert found["upstream-429"].startswith(
        "upstream 429: the upstream refused 14 of 20 calls with 429 by its cap of 3 in "
        "flight: no backpressure?"
    )
    with pytest.raises(FanoutAssertionError) as caught:
        assert_within_limits(m)
    message = str(caught.value)
    assert "which allows 3 in flight: 14 answered 429 by its cap of 3 in flight" in message
    assert "asyncio.Semaphore(3)" in message and "rate limiter" not in message
    assert fixed.upstream().rejected_per_sample == [0, 0]
    kinds = {f.kind for f in diagnose(fixed)}
    assert not {"upstream-429", "rate-exceeded"} & kinds
    assert_within_limits(fixed)


def test_a_service_failing_on_a_429_is_told_which_upstream_refused(stack, client) -> None:
    # Its fix, /gather/10 above, handles the 429 and is measured.
    with pytest.raises(MeasurementError) as caught:
        measure_stack(stack, client, "/strict/10", repeat=2)
    message = str(caught.value)
    assert "GET /strict/10 answered 500, expected 200" in message
    # How many were sent before the app gave up varies; that some were refused does not.
    assert re.search(r"upstream 'default' answered 429 to [1-9]\d* of \d+ calls", message)
    assert "(its rate limit 5/min): the service did not handle a 429" in message


# ---- a service that fails on a 429 (raise_for_status: 500) ----------------------------------
# It can be measured failing, with `expect_status=500`: the timed samples fail as expected and
# the held probe, which applies no rate limit and so succeeds, still gives the structure.
# Found on an aiohttp order service of our own (docs/field.md): `fanout measure
# --expect-status 502` stopped on the held probe's 200. Its fix (handling the 429) answers 200.


def test_a_service_failing_on_a_429_is_measured_failing(stack: Stack, client) -> None:
    m = measure_stack(stack, client, Request("/strict/10", expect_status=500), repeat=2)
    assert m.waves() == [10]  # the held probe's structure, though it answered 200
    assert m.status_code == 500
    kinds = [f.kind for f in diagnose(m)]
    assert "rate-exceeded" in kinds
    fixed = measure_stack(stack, client, "/gather/10", repeat=2)  # handles its 429s: 200
    assert fixed.waves() == [10]


def test_a_wrong_expected_status_still_stops_on_the_held_probe(stack: Stack, client) -> None:
    with pytest.raises(MeasurementError) as caught:  # 404 is no failure the limit causes
        measure_stack(stack, client, Request("/strict/10", expect_status=404), repeat=1)
    assert "answered 200, expected 404" in str(caught.value) or "answered 500" in str(caught.value)
