"""A quoting service that is not shaped like app/: two upstreams, a POST with a JSON body,
two clients built in the lifespan, a JSON answer, and no `n` a test could pass.

`POST /quote {"items": [...]}` looks every item up in the catalog (all at once), then asks
the rates service for one FX rate (a POST), and answers the total. The gate validation
(benchmarks/gate_validation.py --latency) commits one-line changes to the two constants
below: awaited work added to every request, and the gather made a loop.
"""

import asyncio
import os
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI
from pydantic import BaseModel, Field

#: Awaited work added to every request, in seconds (a slowdown commit sets it).
EXTRA_WAIT_S = 0.0
#: Look the items up all at once (True) or one after another (a regression commit).
GATHER = True


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with (
        httpx2.AsyncClient(base_url=os.environ["CATALOG_URL"]) as catalog,
        httpx2.AsyncClient(base_url=os.environ["RATES_URL"]) as rates,
    ):
        app.state.catalog, app.state.rates = catalog, rates
        yield


app = FastAPI(lifespan=lifespan)


class Order(BaseModel):
    items: list[str] = Field(min_length=1, max_length=50)
    currency: str = "EUR"


async def lookup(client: httpx2.AsyncClient, items: list[str]) -> list[dict]:
    if GATHER:
        answers = await asyncio.gather(*(client.get(f"/items/{item}") for item in items))
    else:
        answers = [await client.get(f"/items/{item}") for item in items]
    for answer in answers:
        answer.raise_for_status()
    return [answer.json() for answer in answers]


@app.post("/quote")
async def quote(order: Order) -> dict:
    found = await lookup(app.state.catalog, order.items)
    rate = await app.state.rates.post("/rate", json={"to": order.currency})
    rate.raise_for_status()
    if EXTRA_WAIT_S:
        await asyncio.sleep(EXTRA_WAIT_S)
    cents = sum(item["cents"] for item in found)
    return {"items": len(found), "total": round(cents * rate.json()["rate"])}
