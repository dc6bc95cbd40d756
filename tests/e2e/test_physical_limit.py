"""Issue 7: the app never collapses at its widest fan-out.

Not timed (speed lives in benchmarks/physical_limit.py): what is asserted is
exact. /async/1000 answers 1000 successful status codes, the upstream saw
exactly 1000 calls, and (on the default transport) all 1000 were in flight at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from app.settings import TRANSPORTS, Settings
from pytest_fanout.servers.stack import Stack
from pytest_fanout.servers.upstream import Behaviour

N = 1000
#: Long enough that the default transport starts all 1000 calls (~0.3 ms of CPU each)
#: before the first returns, even on a busy machine; httpx's own pool needs ~1 ms each.
DELAY_MS = 1000


@pytest.fixture(scope="module", params=TRANSPORTS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with Stack(
        behaviour=Behaviour(delay_ms=DELAY_MS), app_env={"FANOUT_TRANSPORT": request.param}
    ) as running:
        yield running


def test_async_1000_returns_1000_successes(stack: Stack) -> None:
    assert stack.app is not None
    stack.upstream.reset()
    with httpx.Client(base_url=stack.app.url, timeout=60) as client:
        response = client.get(f"/async/{N}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_codes"] == [200] * N
    assert body["errors"] == {"count": 0, "first": []}
    stats = stack.upstream.stats()
    assert stats["requests"] == N
    assert stats["completed"] == N
    if stack.app.env["FANOUT_TRANSPORT"] == Settings().transport:
        assert stats["peak_inflight"] == N  # all at once: nothing capped it below n
    else:
        assert stats["peak_inflight"] > 1


def test_async_1000_twice_in_parallel_on_a_warm_pool(stack: Stack) -> None:
    """Two concurrent /async/1000 share the 1000-connection pool: slower, never failing."""
    assert stack.app is not None
    stack.upstream.reset()
    with httpx.Client(base_url=stack.app.url, timeout=60) as client:
        client.get(f"/async/{N}").raise_for_status()  # warm the pool

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.app.url, timeout=60) as aclient:
            return list(await asyncio.gather(*(aclient.get(f"/async/{N}") for _ in range(2))))

    for response in asyncio.run(both()):
        assert response.status_code == 200, response.text
        assert response.json()["status_codes"] == [200] * N
    assert stack.upstream.stats()["peak_inflight"] <= 1000  # the pool bounds in-flight calls
