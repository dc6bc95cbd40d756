"""Admission control under a small bounded flood (issue 11): shed at once, answers in time.

The same `run_flood()` as `benchmarks/flood.py`, small and with a low bound:
FANOUT_MAX_PENDING_CALLS=20 lets two 10-call requests in at a time, so most
of a 40-client flood is shed with 503 + Retry-After. What is asserted is exact
first (answers counted by the clients against the app's own `shed` and
`admitted`, calls the upstream saw, the upstream's peak under the bound),
then every answer against the deadline plus a wide margin.
"""

from __future__ import annotations

import asyncio
import time

import httpx2
import pytest

from app.settings import TRANSPORTS
from benchmarks.flood import FloodConfig, FloodResult, run_flood
from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import Stack

DEADLINE_S = 3.0
MARGIN_S = 2.0
RETRY_AFTER = "2"
LOW_BOUND = {
    "FANOUT_MAX_N": "10",
    "FANOUT_MAX_PENDING_CALLS": "20",
    "FANOUT_RETRY_AFTER_S": RETRY_AFTER,
}


def small_flood(route: str, n: int, delay_ms: float) -> FloodResult:
    return run_flood(
        FloodConfig(
            concurrency=40,
            requests=200,
            seconds=30,
            n=n,
            route=route,
            delay_ms=delay_ms,
            deadline_s=DEADLINE_S,
            margin_s=MARGIN_S,
            app_env=LOW_BOUND,
        )
    )


def assert_held(result: FloodResult, n: int) -> None:
    assert result.failures() == [], result.table()
    assert len(result.answers) == 200  # the count bound, exactly
    assert result.ok + result.shed == 200 and result.other == 0
    assert result.ok >= 2 and result.shed >= 1  # some got in, some were shed
    assert {a.retry_after for a in result.answers if a.status == 503} == {RETRY_AFTER}
    # Exact accounting, from three sides: the clients, the app, the upstream.
    assert (result.app_stats["admitted"], result.app_stats["shed"]) == (result.ok, result.shed)
    assert result.upstream_stats["requests"] == n * result.ok  # every admitted call was made
    assert result.upstream_stats["peak_inflight"] <= 20  # FANOUT_MAX_PENDING_CALLS
    assert result.app_stats["pending_calls"] == 0
    assert max(result.seconds()) < DEADLINE_S + MARGIN_S
    # Memory stays bounded: 200 requests, at most 20 calls pending at any time.
    assert result.rss_peak_kib - result.rss_before_kib < 64 * 1024


def test_a_flood_of_async_requests_is_shed_and_every_answer_is_in_time() -> None:
    result = small_flood("/async/{n}", n=10, delay_ms=1000)
    assert_held(result, n=10)
    # Two 10-call requests fill the bound, so the upstream saw them side by side.
    assert result.upstream_stats["peak_inflight"] in (10, 20)


def test_sync_requests_are_admitted_before_they_wait_for_a_thread() -> None:
    """/sync/5 at 200 ms takes at least 1 s; a shed one never waits for the threadpool."""
    result = small_flood("/sync/{n}", n=5, delay_ms=200)
    assert_held(result, n=5)
    assert result.upstream_stats["peak_inflight"] <= 20 // 5  # one call per admitted request
    assert min(result.seconds(200)) >= 5 * 0.2
    assert max(result.seconds(503)) < min(result.seconds(200))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_deadline_covers_the_wait_for_a_pooled_connection(transport: str) -> None:
    """Pool of 2, six 1 s calls, deadline 1.5 s: two answer, two are cut short, two never start."""
    env = {"FANOUT_POOL_SIZE": "2", "FANOUT_DEADLINE_S": "1.5", "FANOUT_TRANSPORT": transport}
    with Stack(behaviour=Behaviour(delay_ms=1000), app_env=env) as stack:
        assert stack.app is not None
        with httpx2.Client(base_url=stack.app.url, timeout=30, verify=tls_context()) as client:
            start = time.perf_counter()
            response = client.get("/async/6")
            elapsed = time.perf_counter() - start
        body = response.json()
        stats = stack.upstream.stats()
    assert response.status_code == 200, response.text
    assert body["status_codes"] == [200, 200, None, None, None, None]
    assert body["errors"]["count"] == 4
    assert (stats["requests"], stats["peak_inflight"]) == (4, 2)
    assert 1.5 <= elapsed < 1.5 + MARGIN_S


def test_an_async_request_never_waits_behind_sequential_ones_for_a_thread() -> None:
    """40 /sync/1 hold every worker thread (their one call takes 2 s); an /async/1 sent
    meanwhile reaches the upstream at once: exact, the upstream saw 41 calls in flight.
    (A `def` dependency made every request wait for a thread first: the peak was 40.)"""
    env = {"FANOUT_DEADLINE_S": "10"}
    with Stack(behaviour=Behaviour(delay_ms=2000), app_env=env) as stack:
        assert stack.app is not None
        url = stack.app.url

        async def scenario() -> list[int]:
            limits = httpx2.Limits(max_connections=50)
            async with httpx2.AsyncClient(
                base_url=url, timeout=30, limits=limits, verify=tls_context()
            ) as client:
                syncs = [asyncio.ensure_future(client.get("/sync/1")) for _ in range(40)]
                deadline = time.monotonic() + 10
                while stack.upstream.stats()["inflight"] < 40:  # poll: every thread busy
                    assert time.monotonic() < deadline, "40 sync calls in flight"
                    await asyncio.sleep(0.02)
                answers = await asyncio.gather(client.get("/async/1"), *syncs)
            return [a.status_code for a in answers]

        statuses = asyncio.run(scenario())
        stats = stack.upstream.stats()
    assert statuses == [200] * 41
    assert stats["requests"] == 41 and stats["peak_inflight"] == 41


def test_a_sync_request_that_gets_no_thread_in_time_answers_at_its_deadline() -> None:
    """60 /sync/1 for 40 threads, each call 3 s, deadline 1 s: the 40 that got a thread are
    cut at the deadline; the 20 that waited for one answer then too."""
    env = {"FANOUT_DEADLINE_S": "1", "FANOUT_MAX_PENDING_CALLS": "1000"}
    with Stack(behaviour=Behaviour(delay_ms=3000), app_env=env) as stack:
        assert stack.app is not None
        url = stack.app.url

        async def scenario() -> list[tuple[int, list, float]]:
            limits = httpx2.Limits(max_connections=60)
            async with httpx2.AsyncClient(
                base_url=url, timeout=30, limits=limits, verify=tls_context()
            ) as client:

                async def one() -> tuple[int, list, float]:
                    began = time.perf_counter()
                    answer = await client.get("/sync/1")
                    return (
                        answer.status_code,
                        answer.json()["status_codes"],
                        (time.perf_counter() - began),
                    )

                return await asyncio.gather(*(one() for _ in range(60)))

        answers = asyncio.run(scenario())
        stats = stack.upstream.stats()
    assert {status for status, _, _ in answers} == {200}
    assert all(codes == [None] for _, codes, _ in answers)  # every call: deadline exceeded
    # 40 calls made at once; a late request may make its call with the few milliseconds
    # left when a thread frees at the holders' deadline (and is cut at once).
    assert 40 <= stats["requests"] <= 60
    assert max(seconds for _, _, seconds in answers) < 1 + MARGIN_S
