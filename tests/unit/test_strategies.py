"""Unit tests of the fan-out strategies in app/fanout.py, without a server.

The transport is mocked (httpx2.MockTransport): these test pure logic, the
order of outcomes, error reporting, bounds and deadlines.
"""

from __future__ import annotations

import asyncio
import time

import httpx2
import pytest

from app import fanout
from app.slowdown import burn_cpu, slowed_async, slowed_sync

URLS = [f"http://upstream.test/items/{i}" for i in range(10)]


def async_client(handler) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


async def _ok(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200)


def test_gather_all_keeps_order_and_reports_failures() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        index = int(request.url.path.rsplit("/", 1)[1])
        if index == 3:
            raise httpx2.ReadTimeout("slow", request=request)
        return httpx2.Response(500 if index % 2 else 200)

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

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.001)
        inflight -= 1
        return httpx2.Response(200)

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
    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/0"):
            return httpx2.Response(200)
        await asyncio.sleep(10)
        return httpx2.Response(200)

    async def run() -> list[fanout.CallOutcome]:
        async with async_client(handler) as client:
            return await fanout.gather_all(client, URLS[:3], deadline_s=0.05)

    outcomes = asyncio.run(run())
    assert outcomes[0].ok
    assert [o.error for o in outcomes[1:]] == [fanout.DEADLINE_REASON] * 2


def test_connect_errors_are_unreachable() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as client:
        outcomes = fanout.call_in_sequence(client, URLS[:2], deadline_s=5)
    assert all(o.unreachable and o.error == "ConnectError" for o in outcomes)
    assert all("refused" in o.detail for o in outcomes)


def test_sequence_stops_at_the_deadline() -> None:
    calls = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        burn_cpu(0.03)
        return httpx2.Response(200)

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as client:
        outcomes = fanout.call_in_sequence(client, URLS, deadline_s=0.05)
    assert 1 <= len(calls) < len(URLS)
    assert outcomes[-1].error == fanout.DEADLINE_REASON
    assert all(o.ok for o in outcomes[: len(calls)])


def test_async_strategies_make_no_call_once_the_deadline_has_passed() -> None:
    """A request that spent its whole deadline waiting starts nothing: every slot says so."""
    calls: list[str] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        return httpx2.Response(200)

    async def run() -> list[list[fanout.CallOutcome]]:
        async with async_client(handler) as client:
            return [
                await fanout.gather_all(client, URLS[:3], deadline_s=0),
                await fanout.gather_bounded(client, URLS[:3], 2, deadline_s=-1.0),
            ]

    for outcomes in asyncio.run(run()):
        assert [o.error for o in outcomes] == [fanout.DEADLINE_REASON] * 3
    assert calls == []


def test_urls_may_be_prebuilt_httpx2_urls() -> None:
    seen: list[str] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(str(request.url))
        return httpx2.Response(200)

    async def run() -> list[fanout.CallOutcome]:
        async with async_client(handler) as client:
            return await fanout.gather_all(client, [httpx2.URL(u) for u in URLS[:2]], deadline_s=5)

    assert all(o.ok for o in asyncio.run(run()))
    assert seen == URLS[:2]


def test_the_injected_slowdown_wraps_the_transport_not_the_strategy() -> None:
    """FANOUT_CALL_OVERHEAD_MS: 10 ms of CPU per call, spent inside the transport."""
    plain = httpx2.MockTransport(lambda r: httpx2.Response(204))
    assert slowed_sync(plain, 0) is plain and slowed_async(plain, 0) is plain  # off: unwrapped
    with httpx2.Client(transport=slowed_sync(plain, 10)) as client:
        start = time.perf_counter()
        outcomes = fanout.call_in_sequence(client, URLS[:5], deadline_s=5)
        spent = time.perf_counter() - start
    assert [o.status for o in outcomes] == [204] * 5
    assert spent >= 0.05  # it spins until the clock has moved on: a busy machine cannot cut it

    async def run() -> list[fanout.CallOutcome]:
        async with httpx2.AsyncClient(transport=slowed_async(plain, 10)) as client:
            return await fanout.gather_all(client, URLS[:3], deadline_s=5)

    start = time.perf_counter()
    outcomes = asyncio.run(run())
    assert [o.status for o in outcomes] == [204] * 3
    assert time.perf_counter() - start >= 0.03  # on the loop: the three calls add up
