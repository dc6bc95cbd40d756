"""The harness is not tied to app/: a separate FastAPI service, configured by ini only."""

from __future__ import annotations

import pytest

SERVICE = '''
"""A user's own fan-out service: one shared client, gather over it."""
import asyncio
import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"]) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/prices/{count}")
async def prices(count: int) -> dict:
    client = app.state.client
    answers = await asyncio.gather(*(client.get(f"/price/{i}") for i in range(count)))
    return {"codes": [a.status_code for a in answers]}


@app.get("/prices-slowly/{count}")
def prices_slowly(count: int) -> dict:
    with httpx.Client(base_url=os.environ["FANOUT_UPSTREAM_URL"]) as client:
        return {"codes": [client.get(f"/price/{i}").status_code for i in range(count)]}
'''

TESTS = """
def test_prices_fan_out_concurrently(fanout):
    fast = fanout.measure("/prices/10", repeat=3, n=10, concurrency=10)
    fanout.assert_concurrency(fast, peak=10, requests=10)
    fanout.assert_no_blocking(fast)
    assert fast.efficiency > 0.5

def test_slow_variant_is_caught(fanout):
    slow = fanout.measure("/prices-slowly/10", repeat=1, warmup=0, n=10, concurrency=1)
    fanout.assert_concurrency(slow, peak=10)
"""


def test_own_service_configured_by_ini(pytester: pytest.Pytester) -> None:
    service_dir = pytester.mkpydir("pricing")
    (service_dir / "service.py").write_text(SERVICE)
    pytester.makeini(
        """
        [pytest]
        fanout_app = pricing.service:app
        fanout_app_dir = .
        fanout_delay_ms = 100
        """
    )
    pytester.makepyfile(test_pricing=TESTS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*expected 10 requests in flight at the upstream during /prices-slowly/10, saw 1: "
            "the calls ran one at a time*",
            "*= fan-out measurements =*",
            "test_prices_fan_out_concurrently*/prices/10*",
        ]
    )
