"""A catalogue service that is not shaped like app/: two upstreams (the catalogue and its
reviews), POST bodies, JSON answers, and one route per HTTP client as users write them:
httpx without a pool limit and with its stock pool, httpx2, aiohttp with its default limit
and with none, OpenAI's SDK, and a sync route that fans out over a thread pool of
`requests` calls. The truth of each route's structure is in its code."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import aiohttp
import httpx
import httpx2
import requests
from fastapi import FastAPI
from pydantic import BaseModel

CATALOG = os.environ["FANOUT_UPSTREAM_URL"]
REVIEWS = os.environ["REVIEWS_URL"]
TIMEOUT_S = 60

try:  # the SDK is a test extra: its route answers 501 without it
    import openai
except ImportError:  # pragma: no cover
    openai = None


@asynccontextmanager
async def lifespan(app: FastAPI):
    unbounded = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with (
        httpx.AsyncClient(limits=unbounded, timeout=TIMEOUT_S) as app.state.unbounded,
        httpx.AsyncClient(timeout=TIMEOUT_S) as app.state.stock,
        httpx2.AsyncClient(timeout=TIMEOUT_S) as app.state.httpx2,
        aiohttp.ClientSession() as app.state.aiohttp_100,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as app.state.aiohttp_0,
    ):
        app.state.openai = (
            openai.AsyncOpenAI(base_url=f"{CATALOG}/v1", api_key="test", max_retries=0)
            if openai
            else None
        )
        yield
        if app.state.openai is not None:
            await app.state.openai.close()


app = FastAPI(lifespan=lifespan)


class Basket(BaseModel):
    skus: list[str]


@app.get("/httpx/{pool}/{count}")
async def with_httpx(pool: str, count: int) -> dict:
    client = app.state.unbounded if pool == "unbounded" else app.state.stock
    answers = await asyncio.gather(*(client.get(f"{CATALOG}/item/{i}") for i in range(count)))
    return {"items": [a.json() for a in answers]}


@app.get("/httpx2/{count}")
async def with_httpx2(count: int) -> dict:
    client = app.state.httpx2
    answers = await asyncio.gather(*(client.get(f"{CATALOG}/item/{i}") for i in range(count)))
    return {"items": [a.json() for a in answers]}


@app.get("/aiohttp/{limit}/{count}")
async def with_aiohttp(limit: int, count: int) -> dict:
    session = app.state.aiohttp_0 if limit == 0 else app.state.aiohttp_100

    async def one(i: int) -> dict:
        async with session.get(f"{CATALOG}/item/{i}") as answer:
            return await answer.json()

    return {"items": await asyncio.gather(*(one(i) for i in range(count)))}


@app.get("/openai/{count}")
async def with_openai(count: int) -> dict:
    client = app.state.openai
    models = await asyncio.gather(*(client.models.retrieve(f"m{i}") for i in range(count)))
    return {"models": [m.id for m in models]}


@app.get("/threads/{workers}/{count}")
def with_threads(workers: int, count: int) -> dict:
    """A sync route: FastAPI runs it in its thread pool; it fans out over its own."""
    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(lambda i: requests.get(f"{CATALOG}/item/{i}").json(), range(count)))
    return {"items": answers}


@app.post("/basket/together")
async def basket_together(basket: Basket) -> dict:
    """Every item and its reviews at once: both upstreams in one gather."""
    client = app.state.unbounded
    calls = [client.get(f"{CATALOG}/item/{s}") for s in basket.skus]
    calls += [client.get(f"{REVIEWS}/reviews/{s}") for s in basket.skus]
    answers = await asyncio.gather(*calls)
    return {"answers": len(answers)}


@app.post("/basket/chain")
async def basket_chain(basket: Basket) -> dict:
    """The items first, then the reviews of those in stock: the catalogue, then the reviews."""
    client = app.state.unbounded
    items = await asyncio.gather(*(client.get(f"{CATALOG}/item/{s}") for s in basket.skus))
    skus = [a.json()["sku"] for a in items]
    reviews = await asyncio.gather(*(client.get(f"{REVIEWS}/reviews/{s}") for s in skus))
    return {"items": len(items), "reviews": len(reviews)}
