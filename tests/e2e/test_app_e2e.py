"""The reference app end to end: real uvicorn processes on loopback, a real stub upstream.

Counts at the upstream are exact, so they are asserted exactly: calls in flight
at once are read off the held waves (the stub holds each call until the app
sends no more, then answers the wave), which do not depend on the machine's
speed or load. The one timing check is a ratio within the same run, with a
wide margin.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import Stack

DELAY_MS = 100


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(behaviour=Behaviour(delay_ms=DELAY_MS)) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx2.Client]:
    assert stack.app is not None
    stack.upstream.restore()
    with httpx2.Client(base_url=stack.app.url, timeout=60, verify=tls_context()) as c:
        yield c


def fan_out(stack: Stack, client: httpx2.Client, path: str) -> tuple[dict, dict, float]:
    """GET path; return the answer, the upstream's gauge for it, and the wall time."""
    stack.upstream.reset()
    start = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    return response.json(), stack.upstream.stats(), elapsed


def held(stack: Stack, client: httpx2.Client, path: str) -> tuple[dict, list[int]]:
    """GET path with the stub holding its calls: the answer and the waves."""
    assert stack.app is not None
    with stack.upstream.hold(app_pid=stack.app.pid) as waves:
        response = client.get(path)
    assert response.status_code == 200, response.text
    return response.json(), waves.waves


def test_sync_runs_one_call_at_a_time(stack: Stack, client: httpx2.Client) -> None:
    body, waves = held(stack, client, "/sync/8")
    assert waves == [1] * 8
    assert body["pattern"] == "sync" and body["status_codes"] == [200] * 8


def test_async_puts_every_call_in_flight(stack: Stack, client: httpx2.Client) -> None:
    body, waves = held(stack, client, "/async/8")
    assert waves == [8]
    assert body["errors"] == {"count": 0, "first": []}


def test_async_150_is_not_capped_by_the_pool(stack: Stack, client: httpx2.Client) -> None:
    body, waves = held(stack, client, "/async/150")
    assert waves == [150]  # all 150 in flight at once: no pool cap below it
    assert body["status_codes"] == [200] * 150


def test_semaphore_bounds_and_reaches_its_bound(stack: Stack, client: httpx2.Client) -> None:
    body, waves = held(stack, client, "/async_sem/40/7")
    assert waves == [7, 7, 7, 7, 7, 5]
    assert body["max_concurrent"] == 7


def test_the_timed_peak_never_exceeds_the_structure(stack: Stack, client: httpx2.Client) -> None:
    """At the configured delay the gauge counts what this machine reached: at most the
    structure (load can only lower it), and exactly the calls made."""
    _, stats, _ = fan_out(stack, client, "/async_sem/40/7")
    assert stats["requests"] == 40
    assert 1 <= stats["peak_inflight"] <= 7


def test_sync_is_at_least_4x_slower_than_async(stack: Stack, client: httpx2.Client) -> None:
    fan_out(stack, client, "/async/8")  # warm the pool
    _, _, sync_s = fan_out(stack, client, "/sync/8")
    _, _, async_s = fan_out(stack, client, "/async/8")
    assert sync_s / async_s >= 4, f"sync {sync_s:.3f}s vs async {async_s:.3f}s"


def test_answer_shape(stack: Stack, client: httpx2.Client) -> None:
    body, _, _ = fan_out(stack, client, "/async_sem/3/2")
    assert set(body) == {
        "message",
        "pattern",
        "n",
        "max_concurrent",
        "elapsed_s",
        "status_codes",
        "errors",
    }
    assert isinstance(body["elapsed_s"], float) and body["elapsed_s"] >= DELAY_MS / 1000
    assert body["n"] == 3


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/sync/0", "greater than or equal to 1"),
        ("/async/0", "greater than or equal to 1"),
        ("/async/-3", "greater than or equal to 1"),
        ("/async/1001", "less than or equal to 1000"),
        ("/blocking/5000", "less than or equal to 1000"),
        ("/async/ten", "valid integer"),
        ("/async/2.5", "valid integer"),
        ("/async_sem/10/0", "greater than or equal to 1"),
        ("/async_sem/10/1001", "less than or equal to 1000"),
        ("/async_sem/10/x", "valid integer"),
        ("/async/99999999999999999999999999", "less than or equal to 1000"),
    ],
)
def test_bad_input_is_a_422_with_the_reason(
    stack: Stack, client: httpx2.Client, path: str, reason: str
) -> None:
    stack.upstream.reset()
    response = client.get(path)
    assert response.status_code == 422
    assert reason in response.json()["detail"][0]["msg"]
    assert stack.upstream.stats()["requests"] == 0


def test_half_failing_upstream_gives_200_with_counted_errors(
    stack: Stack, client: httpx2.Client
) -> None:
    stack.upstream.configure(error_rate=0.5, delay_ms=5)
    body, stats, _ = fan_out(stack, client, "/async/100")
    assert body["errors"]["count"] == stats["errors"]
    assert 20 <= body["errors"]["count"] <= 80  # binomial(100, 0.5): outside is ~1e-9
    assert len(body["errors"]["first"]) == 5
    assert body["status_codes"].count(500) == body["errors"]["count"]


def test_killed_upstream_gives_502() -> None:
    with Stack(behaviour=Behaviour(delay_ms=0)) as own:
        assert own.app is not None
        own.upstream.stop()
        with httpx2.Client(base_url=own.app.url, timeout=30, verify=tls_context()) as c:
            for path in ("/sync/3", "/async/3", "/async_sem/3/1", "/blocking/2"):
                response = c.get(path)
                assert response.status_code == 502, path
                assert "unreachable" in response.json()["detail"]
            assert c.get("/healthz").json() == {"status": "ok"}
