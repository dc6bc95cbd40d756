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
            "*expected 10 calls in flight at once at the upstream during /prices-slowly/10, the "
            "held probe saw at most 1 (waves *: the calls ran one at a time*",
            "*= fan-out measurements =*",
            "test_prices_fan_out_concurrently*/prices/10*",
        ]
    )


SMALL_POOL_SERVICE = """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    limits = httpx.Limits(max_keepalive_connections=5)
    async with httpx.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"],
                                 limits=limits) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/wide/{count}")
async def wide(count: int) -> dict:
    answers = await asyncio.gather(*(app.state.client.get(f"/i/{i}") for i in range(count)))
    return {"codes": [a.status_code for a in answers]}
"""


def test_a_pool_smaller_than_the_fan_out_is_told_apart(pytester: pytest.Pytester) -> None:
    """12 calls at once through a client that keeps 5 idle connections: after warm-up,
    exactly 7 new connections per sample, and the message names the pool, not the client."""
    pytester.makepyfile(small_pool=SMALL_POOL_SERVICE)
    pytester.makeini("[pytest]\nfanout_app = small_pool:app\nfanout_delay_ms = 100\n")
    pytester.makepyfile(
        test_pool="""
        import pytest

        def test_pool(fanout):
            m = fanout.measure("/wide/12", repeat=3, n=12)
            fanout.assert_concurrency(m, peak=12, requests=12)
            assert m.upstream().connections_per_sample == [7, 7, 7]
            with pytest.raises(AssertionError) as failed:
                fanout.assert_connection_reuse(m)
            assert (
                "7 new connections for 12 calls, outliving the request: the client keeps "
                "fewer idle connections than the fan-out needs (httpx keeps 20 by default)"
            ) in str(failed.value)
            fanout.assert_connection_reuse(m, at_most=7)
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


HALF_FRESH_SERVICE = """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI

INVENTORY, PRICING = os.environ["INVENTORY_URL"], os.environ["PRICING_URL"]


@asynccontextmanager
async def lifespan(app):
    async with httpx2.AsyncClient(base_url=PRICING) as pricing:
        app.state.pricing = pricing
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/checkout")
async def checkout(basket: dict) -> dict:
    async with httpx2.AsyncClient(base_url=INVENTORY) as inventory:  # built per request
        stock = await asyncio.gather(*(inventory.get(f"/stock/{s}") for s in basket["skus"]))
    quote = await app.state.pricing.post("/quote", json=basket)
    return {"stock": len(stock), "quote": quote.status_code}
"""


def test_a_client_per_request_for_one_upstream_is_named_at_that_one(
    pytester: pytest.Pytester,
) -> None:
    """Inventory's client is built per request, pricing's is shared: summed, 6 new
    connections for 7 calls; the message must name inventory's client, not a small pool."""
    pytester.makepyfile(half_fresh=HALF_FRESH_SERVICE)
    pytester.makeini(
        "[pytest]\nfanout_app = half_fresh:app\nfanout_delay_ms = 50\n"
        "fanout_upstreams =\n    inventory=INVENTORY_URL\n    pricing=PRICING_URL\n"
    )
    pytester.makepyfile(
        test_half="""
        import pytest

        def test_half(fanout):
            m = fanout.measure("/checkout", method="POST", json={"skus": list("abcdef")}, repeat=2)
            assert m.upstream("inventory").connections_per_sample == [6, 6]
            assert m.upstream("pricing").connections_per_sample == [0, 0]
            with pytest.raises(AssertionError) as failed:
                fanout.assert_connection_reuse(m)
            message = str(failed.value)
            assert (
                "after warm-up: every one of the 6 calls at upstream 'inventory' arrived on a "
                "new connection: no connection was reused (a client built per request?); "
                "no connection reuse: every connection to upstream 'inventory' closed"
            ) in message, message
            assert "fewer idle" not in message
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
