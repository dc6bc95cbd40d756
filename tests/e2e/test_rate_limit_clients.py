"""Rate-limited upstreams and the clients people use (issue 33), each a service written the
way its users write it (`ratelimit_app/clients.py`, async FastAPI, and `sync_clients.py`, Flask
with threads), against
stubs with a token bucket (`rate_limit`, `burst`: small limits, so the bucket does not refill
within a sample and every count is exact):

- a semaphore (a thread pool in the sync service) is not a rate limit: caught, named;
- aiolimiter's AsyncLimiter under the limit (ratelimit's decorator in the sync service's
  threads): no 429;
- retries at once: a retry storm, caught;
- retries after a fixed backoff shorter than the 429 asks for: Retry-After ignored, caught;
- retries after the wait the 429 asks for: they pass;
- the OpenAI SDK (`max_retries=2`, async and sync) backs off by itself (retry-after-ms):
  passes, its retry counted;
- tenacity around the SDK: two layers that multiply, counted and named.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.assertions import FanoutAssertionError, assert_backs_off, assert_within_limits
from pytest_fanout.diagnosis import diagnose
from pytest_fanout.fixture import Fanout
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import Measurement, Request
from pytest_fanout.servers import Stack
from pytest_fanout.servers.process import tls_context
from pytest_fanout.timeline.findings import static_findings
from pytest_fanout.timeline.session import waterfall_of
from tests.helpers import measure_stack

APP_DIR = Path(__file__).parent / "ratelimit_app"
APPS = {"async": "clients:app", "sync": "sync_clients:app"}
CHAT = "/v1/chat/completions"
#: A 429 that keeps coming (an exhausted quota): what OpenAI sends, with a short wait asked.
QUOTA = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota"}}
QUOTA_HEADERS = {"retry-after-ms": "20", "retry-after": "1"}
SAMPLES = 2


@pytest.fixture(scope="module", params=sorted(APPS))
def service(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with Stack(
        APPS[request.param],
        app_dir=APP_DIR,
        upstreams={"quotes": "QUOTES_URL", "openai": "OPENAI_STUB_URL"},
        app_env={"OPENAI_BASE_URL": "{upstream_url:openai}/v1", "OPENAI_API_KEY": "sk-stub"},
        behaviour=Behaviour(delay_ms=20),
        startup_timeout=30,
    ) as stack:
        stack.kind = request.param  # type: ignore[attr-defined]
        yield stack


@pytest.fixture
def stack(service: Stack) -> Stack:
    for upstream in service.upstreams.values():
        upstream.restore()
        upstream.reset()
    return service


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        yield client


def only(stack: Stack, kind: str) -> None:
    if stack.kind != kind:  # type: ignore[attr-defined]
        pytest.skip(f"the {kind} service only")


def take(stack: Stack, client: httpx2.Client, path: str, method: str = "GET") -> Measurement:
    return measure_stack(stack, client, Request(path, method=method), repeat=SAMPLES)


def kinds(m: Measurement) -> dict[str, str]:
    return {f.kind: f.message for f in diagnose(m)}


def test_a_semaphore_is_not_a_rate_limit(stack: Stack, client: httpx2.Client) -> None:
    """4 calls in flight at a time, 20 ms each: 10 calls in ~60 ms against 2/s (burst 5)."""
    stack.upstreams["quotes"].configure(rate_limit="2/s", burst=5)
    path = "/semaphore/10" if stack.kind == "async" else "/pool/10"  # type: ignore[attr-defined]
    m = take(stack, client, path)
    g = m.upstream("quotes")
    assert g.waves == [4, 4, 2]
    assert g.requests_per_sample == [10] * SAMPLES
    assert g.rejected_per_sample == [5] * SAMPLES
    assert g.retries == 0
    found = kinds(m)
    assert found["rate-exceeded"].startswith(
        "rate exceeded: upstream 'quotes' allows 2/s (burst 5) and answered 429 to 5 of 10 "
        "calls in every sample: the service keeps 4 calls in flight at once (held waves "
        "[4, 4, 2]): a semaphore or a thread pool bounds how many calls are in flight, not "
        "how many per second; pace the calls with one rate limiter that every request shares "
        "(aiolimiter's AsyncLimiter(2, 1); in threads, one thread-safe limiter of 2 calls per "
        "1 s)"
    )
    assert "upstream-429" not in found and "upstream-errors" not in found
    with pytest.raises(FanoutAssertionError, match="or a thread pool bounds how many calls"):
        assert_within_limits(m)


def test_a_rate_limiter_under_the_limit_gets_no_429(stack: Stack, client: httpx2.Client) -> None:
    """4 calls a second (AsyncLimiter(4, 1); in threads ratelimit's @limits(calls=4,
    period=1)) against 5/s (burst 5): 4 at once, the 5th after the limiter's wait."""
    stack.upstreams["quotes"].configure(rate_limit="5/s", burst=5)
    m = take(stack, client, "/limiter/5")
    g = m.upstream("quotes")
    assert g.requests_per_sample == [5] * SAMPLES
    assert g.rejected == 0 and g.retries == 0
    assert not {"rate-exceeded", "upstream-429"} & set(kinds(m))
    assert_within_limits(m)
    assert_backs_off(m)


def test_a_rate_limiter_at_exactly_the_limit_gets_no_429(
    stack: Stack, client: httpx2.Client
) -> None:
    """AsyncLimiter(4, 1) against 4/s (burst 4), 8 calls: four at once, then one each 250 ms
    on the limiter's clock, each reaching the stub a hop later that varies (an exact bucket
    refused one of them in every run: the limit the harness advises must pass)."""
    only(stack, "async")
    stack.upstreams["quotes"].configure(rate_limit="4/s", burst=4)
    m = take(stack, client, "/limiter/8")
    g = m.upstream("quotes")
    assert g.requests_per_sample == [8] * SAMPLES
    assert g.rejected == 0 and g.retries == 0
    assert "rate-exceeded" not in kinds(m)
    assert_within_limits(m)
    # Gathered behind the limiter: in the held probe the calls it lets through one by one
    # join a wave (a lone call is held 2.5 of the limit's intervals, so the limiter's next
    # one comes meanwhile): never "one at a time, gather them", which it already does; nor
    # a slow client (the pace is the limit's).
    assert max(g.waves) > 1, g.waves
    assert not {"sequential", "slow-client"} & set(kinds(m)), kinds(m)


def test_the_critical_path_of_a_rate_limited_route_starts_each_run_with_full_buckets(
    stack: Stack,
) -> None:
    """Semaphore(4), 10 calls of 20 ms against 2/s (burst 5): in every run 5 answered and 5
    refused at once, as in each sample of measure (without a refill per run, the runs after
    the first found the bucket nearly empty: 10 refused). The delay is the answered calls'
    20 ms, not the mean with the 429s answered at once (10 ms)."""
    only(stack, "async")
    stack.upstreams["quotes"].configure(rate_limit="2/s", burst=5)
    fanout = Fanout(stack.app, stack.upstreams)
    try:
        result = fanout.critical_path("/semaphore/10", budget_s=10)
    finally:
        fanout.close()
    assert result.timeline is not None
    statuses = sorted(c.status for c in result.timeline.calls if c.upstream == "quotes")
    assert statuses == [200] * 5 + [429] * 5
    (quotes,) = [t for t in result.targets if t.upstream == "quotes"]
    assert quotes.calls_per_request == 10 and quotes.delay_ms == 20.0
    assert quotes.min_delay_ms == 20.0


def test_retries_at_once_are_a_storm(stack: Stack, client: httpx2.Client) -> None:
    """6 calls at once against 2/s (burst 3): 3 answered, 3 refused and each retried 3
    times at once, all refused: 15 calls for 6 (x2.5)."""
    stack.upstreams["quotes"].configure(rate_limit="2/s", burst=3)
    m = take(stack, client, "/retry-now/6")
    g = m.upstream("quotes")
    assert g.requests_per_sample == [15] * SAMPLES
    assert g.rejected_per_sample == [12] * SAMPLES
    assert g.retries_per_sample == [9] * SAMPLES
    assert g.distinct_per_sample == [6] * SAMPLES
    assert g.most_retries == 3 and g.amplification == 2.5
    found = kinds(m)
    assert found["retry-storm"].startswith(
        f"retry storm: upstream 'quotes' got {9 * SAMPLES} retries in {SAMPLES} samples "
        "(amplification 2.50: 2.50 calls for each distinct call); "
    )
    assert "no backoff" in found["retry-storm"]
    assert "retry-after-ignored" not in found and "retry-amplification" not in found
    with pytest.raises(FanoutAssertionError, match="retries of a 429 came before the wait"):
        assert_backs_off(m)


def test_a_fixed_backoff_shorter_than_asked_ignores_retry_after(
    stack: Stack, client: httpx2.Client
) -> None:
    """4 calls at once against 1/s (burst 3): one refused, asked to wait ~1 s, retried 3
    times 150 ms apart, and refused each time."""
    stack.upstreams["quotes"].configure(rate_limit="1/s", burst=3)
    m = take(stack, client, "/retry-soon/4")
    g = m.upstream("quotes")
    assert g.requests_per_sample == [7] * SAMPLES
    assert g.rejected_per_sample == [4] * SAMPLES
    assert g.retries_per_sample == [3] * SAMPLES
    assert len(g.retry_waits) == 3 * SAMPLES and all(w.early for w in g.retry_waits)
    found = kinds(m)
    assert found["retry-after-ignored"].startswith(
        f"retry-after ignored: {3 * SAMPLES} of {3 * SAMPLES} retries to upstream 'quotes' "
        "came sooner than the wait their 429 asked for (e.g. GET /quote/"
    )
    assert "retry-storm" not in found and "retry-amplification" not in found
    with pytest.raises(FanoutAssertionError, match="retries of a 429 came before the wait"):
        assert_backs_off(m)


def test_retries_after_the_asked_wait_pass(stack: Stack, client: httpx2.Client) -> None:
    """4 calls at once against 5/s (burst 3): one refused, retried after retry-after-ms
    (~200 ms), when the bucket has its token again."""
    stack.upstreams["quotes"].configure(rate_limit="5/s", burst=3)
    m = take(stack, client, "/retry-after/4")
    g = m.upstream("quotes")
    assert g.requests_per_sample == [5] * SAMPLES
    assert g.rejected_per_sample == [1] * SAMPLES
    assert g.retries_per_sample == [1] * SAMPLES
    assert len(g.retry_waits) == SAMPLES
    assert all(not w.early for w in g.retry_waits)
    found = kinds(m)
    assert "rate-exceeded" in found  # one 429 a sample: the burst is smaller than the fan-out
    assert not {"retry-storm", "retry-after-ignored", "retry-amplification"} & set(found)
    assert_backs_off(m)


def test_the_openai_sdk_backs_off_by_itself(stack: Stack, client: httpx2.Client) -> None:
    """AsyncOpenAI(max_retries=2) (OpenAI(max_retries=2) in 4 threads): 4 questions at once
    against 5/s (burst 3); the refused one is retried by the SDK after retry-after-ms, and
    answered."""
    llm = stack.upstreams["openai"]
    llm.route("POST", CHAT, handler="pytest_fanout.servers.sdk_answers:openai_echo")
    llm.configure(rate_limit="5/s", burst=3)
    m = take(stack, client, "/ask/4", method="POST")
    g = m.upstream("openai")
    assert g.requests_per_sample == [5] * SAMPLES
    assert g.rejected_per_sample == [1] * SAMPLES
    assert g.retries_per_sample == [1] * SAMPLES
    assert all(not w.early for w in g.retry_waits) and len(g.retry_waits) == SAMPLES
    assert not {"retry-storm", "retry-after-ignored", "retry-amplification"} & set(kinds(m))
    assert_backs_off(m)


def test_tenacity_around_the_sdk_multiplies_the_retries(
    stack: Stack, client: httpx2.Client
) -> None:
    """tenacity's 3 attempts around an SDK call that tries 3 times itself, against a quota
    that keeps answering 429: 9 calls for one, the schedule named."""
    stack.upstreams["openai"].route(
        "POST", CHAT, status=429, json=QUOTA, headers=QUOTA_HEADERS, delay_ms=0
    )
    m = take(stack, client, "/ask-tenacity", method="POST")
    g = m.upstream("openai")
    assert g.requests_per_sample == [9] * SAMPLES
    assert g.rejected_per_sample == [9] * SAMPLES
    assert g.retries_per_sample == [8] * SAMPLES
    assert g.distinct_per_sample == [1] * SAMPLES
    assert g.most_retries == 8 and g.amplification == 9.0
    found = kinds(m)
    assert found["retry-amplification"].startswith(
        "retry amplification: 9 calls for one: 3 tries x 3 attempts, "
    )
    assert "two retry layers multiply" in found["retry-amplification"]
    assert found["upstream-429"].startswith("upstream 429: upstream 'openai' refused 18 of 18")
    assert "upstream-errors" not in found and "rate-exceeded" not in found
    assert not {"retry-storm", "retry-after-ignored"} & set(found)
    # The waterfall sees the 9 identical calls; retries of a 429 are no cache's to save.
    waterfall = waterfall_of(m, stack.upstreams)
    assert len(waterfall.timeline.calls) == 9
    assert len({c.digest for c in waterfall.timeline.calls}) == 1
    assert not {"repeated-call", "paid-repeatedly"} & {f.kind for f in static_findings(waterfall)}
