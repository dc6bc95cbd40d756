"""The shop: a user's own FastAPI service with two upstreams.

`POST /basket` checks every SKU's stock at the inventory service (all at
once, over one shared client), then asks the pricing service for a quote
(a POST with a JSON body) for the SKUs in stock. The base URLs come from two
environment variables, as in production.

`POST /basket-new-client-each-time` does the same with a client built per
request: same answers, same peak, but no connection is ever reused.
"""

import asyncio
import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with (
        httpx.AsyncClient(base_url=os.environ["INVENTORY_URL"]) as inventory,
        httpx.AsyncClient(base_url=os.environ["PRICING_URL"]) as pricing,
    ):
        app.state.inventory = inventory
        app.state.pricing = pricing
        yield


app = FastAPI(lifespan=lifespan)


class Basket(BaseModel):
    skus: list[str]


async def price_basket(inventory: httpx.AsyncClient, pricing: httpx.AsyncClient, skus: list[str]):
    answers = await asyncio.gather(*(inventory.get(f"/stock/{sku}") for sku in skus))
    in_stock = [a.json()["sku"] for a in answers if a.json()["available"] > 0]
    quote = await pricing.post("/quote", json={"skus": in_stock})
    quote.raise_for_status()
    return {"in_stock": len(in_stock), "total": quote.json()["total"]}


@app.post("/basket")
async def basket(basket: Basket) -> dict:
    return await price_basket(app.state.inventory, app.state.pricing, basket.skus)


@app.post("/basket-new-client-each-time")
async def basket_new_client(basket: Basket) -> dict:
    async with (
        httpx.AsyncClient(base_url=os.environ["INVENTORY_URL"]) as inventory,
        httpx.AsyncClient(base_url=os.environ["PRICING_URL"]) as pricing,
    ):
        return await price_basket(inventory, pricing, basket.skus)
