"""Issue 7: the app never collapses at its widest fan-out.

Not timed (speed lives in benchmarks/physical_limit.py): what is asserted is
exact. /async/1000 answers 1000 successful status codes, the upstream saw
exactly 1000 calls, all 1000 were in flight at once (on either engine), and two
at once share the 1000-connection pool: exactly 1000 in flight, never more.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from app.settings import TRANSPORTS
from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import Stack
from tests.helpers import REPO

N = 1000
#: Long enough that each engine starts all 1000 calls before the first returns, even on a
#: busy machine: aiohttp's needs ~0.2 ms of CPU a call, httpx2's own pool 1-2 ms.
DELAY_MS = {"aiohttp": 1000, "httpx2": 3000}


@pytest.fixture(scope="module", params=TRANSPORTS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with Stack(
        behaviour=Behaviour(delay_ms=DELAY_MS[request.param]),
        # The 1000-wide pool on both engines (httpx2's default is 100: app/settings.py).
        app_env={"FANOUT_TRANSPORT": request.param, "FANOUT_POOL_SIZE": "1000"},
    ) as running:
        yield running


def test_async_1000_returns_1000_successes(stack: Stack) -> None:
    assert stack.app is not None
    stack.upstream.reset()
    with httpx2.Client(base_url=stack.app.url, timeout=120, verify=tls_context()) as client:
        response = client.get(f"/async/{N}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_codes"] == [200] * N
    assert body["errors"] == {"count": 0, "first": []}
    stats = stack.upstream.stats()
    assert stats["requests"] == N
    assert stats["completed"] == N
    assert stats["peak_inflight"] == N  # all at once: nothing capped it below n


def test_async_1000_twice_in_parallel_on_a_warm_pool(stack: Stack) -> None:
    """Two concurrent /async/1000 share the 1000-connection pool: slower, never failing."""
    assert stack.app is not None
    with httpx2.Client(base_url=stack.app.url, timeout=120, verify=tls_context()) as client:
        client.get(f"/async/{N}").raise_for_status()  # warm the pool
    stack.upstream.reset()

    async def both() -> list[httpx2.Response]:
        async with httpx2.AsyncClient(
            base_url=stack.app.url, timeout=120, verify=tls_context()
        ) as aclient:
            return list(await asyncio.gather(*(aclient.get(f"/async/{N}") for _ in range(2))))

    for response in asyncio.run(both()):
        assert response.status_code == 200, response.text
        assert response.json()["status_codes"] == [200] * N
    stats = stack.upstream.stats()
    assert stats["requests"] == 2 * N
    assert stats["peak_inflight"] == 1000  # FANOUT_POOL_SIZE: the pool full, never past it


def test_the_benchmark_runs_end_to_end_at_smoke_size(tmp_path: Path) -> None:
    """`make bench` at its smallest: every kind of row (app, raw async, raw sync) still runs
    against the real stub (its control token included) and the report is written."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.physical_limit", "--ns", "10", "--delays-ms", "50",
         "--repeats", "2", "--skip-stub", "--clients", "aiohttp,httpx2-sync",
         "--transports", "aiohttp", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "ok 10/10" in out.stdout
    # The targets are judged from this run, under a line naming the machine, and what the
    # app's guards cost is stated ([INFO]: no target, they stay on).
    assert "the issue's targets, from this run on " in out.stdout
    assert "[INFO] cost of the admission control" in out.stdout
    assert "[INFO] cost of the deadline" in out.stdout
    assert (tmp_path / "benchmark.md").read_text().count("|") > 10
