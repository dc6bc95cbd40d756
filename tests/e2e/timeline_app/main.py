"""A checkout service that fans out to four upstreams, shaped to give known weights.

`POST /checkout {"user": "u1", "skus": ["A", "B", "C"]}`:
1. auth `POST /token` (the token goes into every later call: weight 1);
2. two branches side by side (`asyncio.gather`):
   - stock and prices: inventory `GET /stock/{sku}` for every SKU at once
     (weight 1), then pricing `POST /quote` for one SKU after the other, each
     with the stock it got (three sequential rounds: weight 3);
   - reviews `GET /reviews/{sku}` for every SKU at once (25 ms): much shorter than
     the other branch, so off the critical path (weight 0);
3. inventory `POST /reserve` once (inventory's second route: weight 1).

`GET /profile/{user}`: auth `GET /user/{user}` twice (the same request:
no cache), then reviews `GET /by-user/{user}`, which does not use what auth
answered (it could have run beside it).

`GET /summary/{user}`: auth `GET /user/{user}`, then inventory `GET /stock/A` beside
reviews `GET /by-user/{user}` (`asyncio.gather`), then pricing `POST /quote` with the
stock: with by-user at 15 ms beside stock's 40, reviews has 25 ms of slack (weight 0)
and every other upstream weight 1 (the critical path's known truths).

The URLs come from AUTH_URL, INVENTORY_URL, PRICING_URL and REVIEWS_URL.
"""

import asyncio
import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

UPSTREAMS = ("auth", "inventory", "pricing", "reviews")


@asynccontextmanager
async def lifespan(app: FastAPI):
    clients = {
        name: httpx.AsyncClient(base_url=os.environ[f"{name.upper()}_URL"]) for name in UPSTREAMS
    }
    app.state.clients = clients
    try:
        yield
    finally:
        for client in clients.values():
            await client.aclose()


app = FastAPI(lifespan=lifespan)


class Order(BaseModel):
    user: str
    skus: list[str]


def _client(name: str) -> httpx.AsyncClient:
    return app.state.clients[name]


async def _stock_and_prices(token: str, skus: list[str]) -> float:
    inventory, pricing = _client("inventory"), _client("pricing")
    answers = await asyncio.gather(*(inventory.get(f"/stock/{sku}") for sku in skus))
    total = 0.0
    for sku, answer in zip(skus, answers, strict=True):
        stock = answer.json()["available"]
        quote = await pricing.post("/quote", json={"token": token, "sku": sku, "qty": stock})
        quote.raise_for_status()
        total += quote.json()["total"]
    return total


async def _reviews(skus: list[str]) -> int:
    reviews = _client("reviews")
    answers = await asyncio.gather(*(reviews.get(f"/reviews/{sku}") for sku in skus))
    return sum(len(a.json()["stars"]) for a in answers)


@app.post("/checkout")
async def checkout(order: Order) -> dict:
    token = (await _client("auth").post("/token", json={"user": order.user})).json()["token"]
    total, stars = await asyncio.gather(_stock_and_prices(token, order.skus), _reviews(order.skus))
    reserved = await _client("inventory").post("/reserve", json={"skus": order.skus})
    reserved.raise_for_status()
    return {"total": total, "stars": stars, "reservation": reserved.json()["id"]}


@app.get("/profile/{user}")
async def profile(user: str) -> dict:
    auth = _client("auth")
    first = (await auth.get(f"/user/{user}")).json()
    again = (await auth.get(f"/user/{user}")).json()
    reviews = (await _client("reviews").get(f"/by-user/{user}")).json()
    return {"name": first["name"], "same": first == again, "reviews": len(reviews["stars"])}


@app.get("/summary/{user}")
async def summary(user: str) -> dict:
    who = (await _client("auth").get(f"/user/{user}")).json()
    stock, mine = await asyncio.gather(
        _client("inventory").get("/stock/A"), _client("reviews").get(f"/by-user/{user}")
    )
    qty = stock.json()["available"]
    quote = await _client("pricing").post("/quote", json={"token": "t", "sku": "A", "qty": qty})
    quote.raise_for_status()
    stars = len(mine.json()["stars"])
    return {"name": who["name"], "total": quote.json()["total"], "reviews": stars}
