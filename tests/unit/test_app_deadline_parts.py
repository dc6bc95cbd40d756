"""The two parts that keep the app's deadline under a flood: the queue in front of
httpx2's pool and the bounded wait for a worker thread (pure logic, in-process)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx2
import pytest

from app.queued import QueuedTransport
from app.threads import DeadlineThreads


class _Slow(httpx2.AsyncBaseTransport):
    """An inner transport that counts requests in it and answers after `delay_s`."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.inside = 0
        self.peak = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.inside -= 1
        return httpx2.Response(200, content=b"ok")


def test_the_pool_never_holds_more_than_its_places_and_each_is_given_back() -> None:
    inner = _Slow(0.05)

    async def scenario() -> list[int]:
        transport = QueuedTransport(inner, 3)
        async with httpx2.AsyncClient(transport=transport, base_url="http://up") as client:
            answers = await asyncio.gather(*(client.get(f"/{i}") for i in range(12)))
        return [a.status_code for a in answers]

    assert asyncio.run(scenario()) == [200] * 12
    assert inner.peak == 3  # exact: the rest waited in front of the pool


def test_a_wait_past_the_pool_timeout_is_a_pool_timeout() -> None:
    inner = _Slow(1.0)

    async def scenario() -> tuple[type, int]:
        transport = QueuedTransport(inner, 1)
        timeout = httpx2.Timeout(5, pool=0.1)
        async with httpx2.AsyncClient(transport=transport, timeout=timeout) as client:
            first = asyncio.ensure_future(client.get("http://up/a"))
            await asyncio.sleep(0.01)  # let the first take the only place
            with pytest.raises(httpx2.PoolTimeout) as late:
                await client.get("http://up/b")
            await first
            free = not transport.places.locked()
        return type(late.value), free

    kind, free = asyncio.run(scenario())
    assert kind is httpx2.PoolTimeout and free  # the first's place came back


def test_a_request_that_finds_no_thread_in_time_gets_the_default_and_never_runs() -> None:
    ran: list[str] = []
    release = threading.Event()

    def hold() -> str:
        release.wait(5)
        ran.append("hold")
        return "held"

    def late() -> str:
        ran.append("late")
        return "ran"

    async def scenario() -> tuple[str, float]:
        threads = DeadlineThreads(1)
        holder = asyncio.ensure_future(threads.run(lambda: 10.0, hold, "none"))
        await asyncio.sleep(0.05)  # the holder has the one place
        began = time.perf_counter()
        result = await threads.run(lambda: 0.2, late, "deadline")
        waited = time.perf_counter() - began
        release.set()
        await holder
        return result, waited

    result, waited = asyncio.run(scenario())
    assert result == "deadline" and ran == ["hold"]  # exact: `late` never ran
    assert waited < 5 * 0.2  # wide margin: it gave up at its 0.2 s, not at the holder's end
