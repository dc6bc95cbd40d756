"""Upstream faults, end to end: real app and stub upstream processes on loopback.

For every fault (slower than the per-call timeout, 5xx, connection refused,
connection dropped mid-response, 429 over the upstream's cap) the app must:
answer within its deadline, report the failed calls per item (200 with
`errors.count`, or 502 when no call could reach the upstream), stay healthy
(the next request is fine), and leak nothing (the app's in-flight count, read
from the loop probe, and the upstream's return to 0: polled, never slept for).

Counts at the upstream are exact (requests seen, rejected, dropped), so they
are asserted exactly: among other things they prove the app never retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import AppServer, Stack, StubUpstreamServer
from tests.helpers import wait_until

CALL_TIMEOUT_S = 0.5
DEADLINE_S = 2.0
#: Added to every time bound: the machine is shared and noisy; the bounds still catch a hang.
MARGIN_S = 2.0
#: The app lists every reason (not only the first five), so per-item reports can be checked.
APP_ENV = {
    "FANOUT_CALL_TIMEOUT_S": str(CALL_TIMEOUT_S),
    "FANOUT_DEADLINE_S": str(DEADLINE_S),
    "FANOUT_MAX_ERROR_REASONS": "1000",
    "FANOUT_MAX_N": "200",
    "FANOUT_MAX_CONCURRENCY": "200",
}
FAST = Behaviour(delay_ms=5)
#: Far slower than CALL_TIMEOUT_S: an answer before this proves the app gave up on time.
SLOW_MS = 2500
#: How long leftovers may take to drain: the slowest upstream answer plus a margin.
DRAIN_S = SLOW_MS / 1000 + 5.0

ROUTES = {
    "sync": "/sync/{n}",
    "async": "/async/{n}",
    "async_sem": "/async_sem/{n}/2",
    "blocking": "/blocking/{n}",
}


def app_of(stack: Stack) -> AppServer:
    assert stack.app is not None
    return stack.app


def assert_nothing_leaks(stack: Stack, upstream: StubUpstreamServer | None = None) -> None:
    """The app's in-flight count and the upstream's both come back to 0."""
    app = app_of(stack)
    wait_until(lambda: app.probe_stats()["inflight"] == 0, DRAIN_S, "app in-flight back to 0")
    up = upstream or stack.upstream
    wait_until(lambda: up.stats()["inflight"] == 0, DRAIN_S, "upstream in-flight back to 0")


def timed_get(client: httpx2.Client, path: str) -> tuple[httpx2.Response, float]:
    start = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - start


def reasons(body: dict) -> list[str]:
    """The per-item reasons, without their 'call I: ' prefix, in call order."""
    return [entry.split(": ", 1)[1] for entry in body["errors"]["first"]]


def assert_healthy(client: httpx2.Client, stack: Stack, path: str = "/async/5") -> None:
    """With the upstream back to normal, the next fan-out is all 200."""
    stack.upstream.restore()
    response = client.get(path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"]["count"] == 0, body
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(behaviour=FAST, app_env=APP_ENV) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx2.Client]:
    """A client on a quiet stack: leftovers drained, upstream restored, gauges zeroed."""
    assert_nothing_leaks(stack)
    stack.upstream.restore()
    stack.upstream.reset()
    app_of(stack).probe_reset()
    with httpx2.Client(
        base_url=app_of(stack).url, timeout=DEADLINE_S + 30, verify=tls_context()
    ) as c:
        yield c


@pytest.mark.parametrize("route", ["sync", "async", "async_sem"])
def test_upstream_slower_than_the_call_timeout(
    stack: Stack, client: httpx2.Client, route: str
) -> None:
    n = 2 if route == "sync" else 4  # sync: n x timeout stays under the deadline
    stack.upstream.configure(delay_ms=SLOW_MS)
    response, elapsed = timed_get(client, ROUTES[route].format(n=n))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_codes"] == [None] * n
    assert body["errors"]["count"] == n
    assert all("Timeout" in reason for reason in reasons(body)), body["errors"]
    # It gave up per call, long before the upstream would have answered.
    assert body["elapsed_s"] < SLOW_MS / 1000
    assert elapsed < DEADLINE_S + MARGIN_S
    assert stack.upstream.stats()["requests"] == n  # each call made once: no retries
    assert_nothing_leaks(stack)
    assert_healthy(client, stack)


@pytest.mark.parametrize("route", list(ROUTES))
def test_upstream_answering_5xx(stack: Stack, client: httpx2.Client, route: str) -> None:
    n = 6
    stack.upstream.configure(error_rate=1.0, error_status=503)
    response, elapsed = timed_get(client, ROUTES[route].format(n=n))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_codes"] == [503] * n
    assert body["errors"]["count"] == n
    assert reasons(body) == ["HTTP 503"] * n
    assert elapsed < DEADLINE_S + MARGIN_S
    stats = stack.upstream.stats()
    assert (stats["requests"], stats["errors"]) == (n, n)
    assert_nothing_leaks(stack)
    assert_healthy(client, stack)


def test_some_calls_failing_are_reported_in_their_slots(
    stack: Stack, client: httpx2.Client
) -> None:
    """Per-item: the 5xx answers sit at their own index, the rest are 200."""
    n = 40
    stack.upstream.configure(error_rate=0.5, error_status=500)
    body = client.get(f"/async/{n}").json()
    failed = [i for i, status in enumerate(body["status_codes"]) if status == 500]
    assert body["errors"]["count"] == len(failed) == stack.upstream.stats()["errors"]
    assert [int(e.split(":")[0].removeprefix("call ")) for e in body["errors"]["first"]] == failed
    assert set(body["status_codes"]) <= {200, 500}
    assert_nothing_leaks(stack)


@pytest.mark.parametrize("route", list(ROUTES))
def test_upstream_closing_the_connection_mid_response(
    stack: Stack, client: httpx2.Client, route: str
) -> None:
    n = 6
    stack.upstream.configure(drop_rate=1.0)
    response, elapsed = timed_get(client, ROUTES[route].format(n=n))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_codes"] == [None] * n
    assert body["errors"]["count"] == n
    assert all(reason != "deadline exceeded" for reason in reasons(body)), body["errors"]
    assert elapsed < DEADLINE_S + MARGIN_S
    stats = stack.upstream.stats()
    assert (stats["requests"], stats["dropped"]) == (n, n)
    assert_nothing_leaks(stack)
    assert_healthy(client, stack)  # broken connections were not put back in the pool


@pytest.mark.parametrize("route", ["async", "sync"])
def test_failed_calls_are_one_counted_log_line_never_a_traceback(
    stack: Stack, client: httpx2.Client, route: str
) -> None:
    """Dropped connections: one line per fan-out with the running total, in the app's log."""
    n = 6
    before = client.get("/stats").json()["failed_calls"]
    stack.upstream.configure(drop_rate=1.0)
    assert client.get(ROUTES[route].format(n=n)).json()["errors"]["count"] == n
    total = client.get("/stats").json()["failed_calls"]
    assert total == before + n

    line = f"{route}: {n} of {n} upstream calls failed ({total} since start); call 0: "
    app = app_of(stack)
    wait_until(lambda: line in app.log_tail(400), 5, f"the log line {line!r}")
    log = app.log_tail(400)
    assert log.count(line) == 1
    assert "Traceback" not in log
    assert_nothing_leaks(stack)


def test_upstream_answering_429_over_its_cap(stack: Stack, client: httpx2.Client) -> None:
    n, cap = 30, 5
    stack.upstream.configure(max_inflight=cap, delay_ms=200)
    response, elapsed = timed_get(client, f"/async/{n}")

    assert response.status_code == 200, response.text
    body = response.json()
    rejected = [i for i, status in enumerate(body["status_codes"]) if status == 429]
    stats = stack.upstream.stats()
    assert stats["requests"] == n
    assert len(rejected) == stats["rejected"] > 0
    assert body["errors"]["count"] == len(rejected)
    assert set(reasons(body)) == {"HTTP 429"}
    assert stats["peak_inflight"] <= cap
    assert elapsed < DEADLINE_S + MARGIN_S
    assert_nothing_leaks(stack)
    assert_healthy(client, stack)


def test_semaphore_is_backpressure_against_a_capped_upstream(
    stack: Stack, client: httpx2.Client
) -> None:
    """Capped at 10 in flight: /async_sem/100/10 gets no 429, /async/100 does."""
    stack.upstream.configure(max_inflight=10, delay_ms=50)

    assert stack.app is not None
    with stack.upstream.hold(app_pid=stack.app.pid) as held:
        bounded = client.get("/async_sem/100/10")
    assert bounded.status_code == 200, bounded.text
    stats = stack.upstream.stats()
    assert bounded.json()["status_codes"] == [200] * 100
    assert (stats["requests"], stats["rejected"]) == (100, 0)
    assert held.waves == [10] * 10  # the bound reached, never passed

    assert_nothing_leaks(stack)
    stack.upstream.reset()
    unbounded = client.get("/async/100")
    assert unbounded.status_code == 200, unbounded.text
    stats = stack.upstream.stats()
    codes = unbounded.json()["status_codes"]
    assert stats["requests"] == 100
    assert codes.count(429) == stats["rejected"] > 0
    assert codes.count(200) + codes.count(429) == 100
    assert_nothing_leaks(stack)


@pytest.mark.parametrize("route", ["sync", "async_sem"])
def test_deadline_reports_the_calls_not_made(
    stack: Stack, client: httpx2.Client, route: str
) -> None:
    """The sum of the calls (30 x 200 ms, or 15 waves of 2) is far over the 2 s deadline."""
    n = 30
    stack.upstream.configure(delay_ms=200)
    response, elapsed = timed_get(client, ROUTES[route].format(n=n))

    assert response.status_code == 200, response.text
    body = response.json()
    assert elapsed < DEADLINE_S + MARGIN_S
    assert body["elapsed_s"] < DEADLINE_S + MARGIN_S
    by_call = dict(entry.split(": ", 1) for entry in body["errors"]["first"])
    late = [
        int(call.removeprefix("call "))
        for call, why in by_call.items()
        if why == "deadline exceeded"
    ]
    assert late, body  # some calls were never answered
    assert late == list(range(n - len(late), n))  # the last ones, in order
    assert all(body["status_codes"][i] is None for i in late)
    made = n - len(late)
    assert made >= 1
    # The upstream saw every call that was made (sync: at most one cut short by the deadline;
    # async_sem: at most the 2 in flight when the deadline struck), and none of the rest.
    in_flight_at_deadline = 1 if route == "sync" else 2
    assert made <= stack.upstream.stats()["requests"] <= made + in_flight_at_deadline
    assert_nothing_leaks(stack)
    assert_healthy(client, stack)


# ---- connection refused: a stack of its own, since the upstream is stopped ------------------


@pytest.fixture
def refusing_stack() -> Iterator[Stack]:
    with Stack(behaviour=FAST, app_env=APP_ENV) as running:
        yield running


def test_upstream_refusing_connections_then_coming_back(refusing_stack: Stack) -> None:
    stack = refusing_stack
    app = app_of(stack)
    port = stack.upstream.port
    with httpx2.Client(base_url=app.url, timeout=DEADLINE_S + 30, verify=tls_context()) as client:
        assert client.get("/async/3").status_code == 200  # pooled connections exist now
        stack.upstream.stop()

        for route, template in ROUTES.items():
            response, elapsed = timed_get(client, template.format(n=5))
            assert response.status_code == 502, (route, response.text)
            detail = response.json()["detail"]
            assert "unreachable" in detail and "ConnectError" in detail, detail
            assert elapsed < DEADLINE_S + MARGIN_S
            assert client.get("/healthz").status_code == 200
        wait_until(lambda: app.probe_stats()["inflight"] == 0, DRAIN_S, "app in-flight 0")

        # The upstream comes back on the same port: the app recovers without a restart.
        with StubUpstreamServer(FAST, port=port) as again:
            for route, template in ROUTES.items():
                response = client.get(template.format(n=5))
                assert response.status_code == 200, (route, response.text)
                assert response.json()["status_codes"] == [200] * 5
            assert again.stats()["requests"] == 5 * len(ROUTES)
            assert_nothing_leaks(stack, again)


def test_app_pointed_at_a_closed_port_answers_502() -> None:
    # The stub's port, once it has stopped, is a closed port nobody listens on.
    closed = StubUpstreamServer(FAST).start()
    closed.stop()
    with (
        AppServer(upstream_url=closed.url, env=APP_ENV) as app,
        httpx2.Client(base_url=app.url, timeout=DEADLINE_S + 30, verify=tls_context()) as client,
    ):
        for template in ROUTES.values():
            response, elapsed = timed_get(client, template.format(n=5))
            assert response.status_code == 502, response.text
            assert elapsed < DEADLINE_S + MARGIN_S
        assert client.get("/healthz").status_code == 200
        wait_until(lambda: app.probe_stats()["inflight"] == 0, DRAIN_S, "app in-flight 0")
