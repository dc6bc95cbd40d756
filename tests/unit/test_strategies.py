"""Unit tests of the fan-out strategies in app/fanout.py, without a server.

The transport is mocked (httpx.MockTransport): these test pure logic, the
order of outcomes, error reporting, bounds and deadlines.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app import fanout

URLS = [f"http://upstream.test/items/{i}" for i in range(10)]


def async_client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


def test_gather_all_keeps_order_and_reports_failures() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        index = int(request.url.path.rsplit("/", 1)[1])
        if index == 3:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(500 if index % 2 else 200)

    async def run() -> list[fanout.CallOutcome]:
        async with async_client(handler) as client:
            return await fanout.gather_all(client, URLS, deadline_s=5)

    outcomes = asyncio.run(run())
    assert [o.status for o in outcomes] == [200, 500, 200, None, 200, 500, 200, 500, 200, 500]
    assert outcomes[3].error == "ReadTimeout"
    assert outcomes[3].detail == "ReadTimeout: slow"
    assert outcomes[1].error == "HTTP 500"
    assert not any(o.unreachable for o in outcomes)


def test_gather_bounded_never_exceeds_its_bound() -> None:
    inflight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.001)
        inflight -= 1
        return httpx.Response(200)

    async def run() -> list[fanout.CallOutcome]:
        async with async_client(handler) as client:
            return await fanout.gather_bounded(client, URLS, 3, deadline_s=5)

    outcomes = asyncio.run(run())
    assert all(o.ok for o in outcomes)
    assert peak == 3


def test_gather_bounded_rejects_a_zero_bound() -> None:
    async def run() -> None:
        async with async_client(_ok) as client:
            await fanout.gather_bounded(client, URLS, 0, deadline_s=1)

    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(run())


def test_deadline_reports_unfinished_calls() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/0"):
            return httpx.Response(200)
        await asyncio.sleep(10)
        return httpx.Response(200)

    async def run() -> list[fanout.CallOutcome]:
        async with async_client(handler) as client:
            return await fanout.gather_all(client, URLS[:3], deadline_s=0.05)

    outcomes = asyncio.run(run())
    assert outcomes[0].ok
    assert [o.error for o in outcomes[1:]] == [fanout.DEADLINE_REASON] * 2


def test_connect_errors_are_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        outcomes = fanout.call_in_sequence(client, URLS[:2], deadline_s=5)
    assert all(o.unreachable and o.error == "ConnectError" for o in outcomes)
    assert all("refused" in o.detail for o in outcomes)


def test_sequence_stops_at_the_deadline() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        fanout._burn_cpu(0.03)
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        outcomes = fanout.call_in_sequence(client, URLS, deadline_s=0.05)
    assert 1 <= len(calls) < len(URLS)
    assert outcomes[-1].error == fanout.DEADLINE_REASON
    assert all(o.ok for o in outcomes[: len(calls)])


def test_overhead_is_spent_per_call() -> None:
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204))) as client:
        import time

        start = time.perf_counter()
        outcomes = fanout.call_in_sequence(client, URLS[:5], deadline_s=5, overhead_s=0.01)
        elapsed = time.perf_counter() - start
    assert [o.status for o in outcomes] == [204] * 5
    assert elapsed >= 0.05
