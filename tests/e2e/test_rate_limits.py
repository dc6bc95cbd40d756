"""Rate-limited stubs with real processes (issue 33): exact 429 counts per sample, samples
alike (each starts with the bucket full), retries counted exactly, and the two assertions
on a service that retries at once (caught) and one that waits Retry-After (passes).

The service is `ratelimit_app/quotes.py`. Exact counts only: a limit of 5 per minute
refills a token every 12 s, so nothing refills within a sample however loaded the runner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.assertions import FanoutAssertionError, assert_backs_off, assert_within_limits
from pytest_fanout.limits import Behaviour
from pytest_fanout.servers import Stack
from tests.helpers import measure_stack

APP_DIR = Path(__file__).parent / "ratelimit_app"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    behaviour = Behaviour(delay_ms=20, rate_limit="5/min", burst=5)
    with Stack("quotes:app", app_dir=APP_DIR, behaviour=behaviour) as stack:
        yield stack


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=60) as client:
        yield client


def test_ten_at_once_against_five_exactly_five_rejected_per_sample(stack, client) -> None:
    m = measure_stack(stack, client, "/gather/10", repeat=3)
    g = m.upstream()
    assert g.requests_per_sample == [10, 10, 10]
    assert g.rejected_per_sample == [5, 5, 5]  # each sample starts with the bucket full
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
    with pytest.raises(FanoutAssertionError, match="a semaphore bounds how many calls are in"):
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
    with pytest.raises(FanoutAssertionError, match="5 of 15 answered 429, 5 of them retries"):
        assert_within_limits(m)
