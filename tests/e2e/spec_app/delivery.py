"""A small service declared once in [tool.fanout] (tests/e2e/test_spec_stack.py).

Not shaped like app/: two upstreams, a client built in the lifespan per upstream,
JSON answers it parses (a stub's default `{"ok": true}` makes it answer 500),
a POST to the second upstream with the first one's results.
"""

import asyncio
import os
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with (
        httpx2.AsyncClient(base_url=os.environ["STOCK_URL"]) as stock,
        httpx2.AsyncClient(base_url=os.environ["GEO_API_URL"]) as geo,
    ):
        app.state.stock, app.state.geo = stock, geo
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/deliver/{n}")
async def deliver(n: int) -> dict:
    answers = await asyncio.gather(*(app.state.stock.get(f"/stock/sku-{i}") for i in range(n)))
    available = sum(answer.json()["available"] for answer in answers)
    zone = await app.state.geo.post("/zone", json={"skus": n})
    return {"available": available, "zone": zone.json()["zone"]}
