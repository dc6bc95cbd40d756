"""A data service that is not shaped like app/: its /data routes gather JSON documents
(large ones: 72 KB each, as a file server would answer) over an aiohttp session, built
per request (the mistake under test) or shared, gathered, in batches or one after the
other; /report runs `requests` calls on a thread pool from a sync route. Each route's
truth is in its code: the diagnosis must name exactly that."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import aiohttp
import requests
from fastapi import FastAPI

FILES = os.environ["FANOUT_UPSTREAM_URL"]


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with aiohttp.ClientSession() as app.state.shared:
        yield


app = FastAPI(lifespan=lifespan)


async def _fetch(session: aiohttp.ClientSession, i: int) -> int:
    async with session.get(f"{FILES}/file/{i}.json") as answer:
        return len((await answer.json())["rows"])


@app.get("/data/shared/{count}")
async def shared(count: int) -> dict:
    rows = await asyncio.gather(*(_fetch(app.state.shared, i) for i in range(count)))
    return {"rows": sum(rows)}


@app.get("/data/gathered/{count}")
async def gathered(count: int) -> dict:
    async with aiohttp.ClientSession() as session:  # a session per request
        rows = await asyncio.gather(*(_fetch(session, i) for i in range(count)))
    return {"rows": sum(rows)}


@app.get("/data/batched/{count}/{batch}")
async def batched(count: int, batch: int) -> dict:
    rows = 0
    async with aiohttp.ClientSession() as session:  # a session per request
        for start in range(0, count, batch):
            part = range(start, min(start + batch, count))
            rows += sum(await asyncio.gather(*(_fetch(session, i) for i in part)))
    return {"rows": rows}


@app.get("/data/sequential/{count}")
async def sequential(count: int) -> dict:
    async with aiohttp.ClientSession() as session:  # a session per request
        rows = [await _fetch(session, i) for i in range(count)]
    return {"rows": sum(rows)}


@app.get("/report/{workers}/{count}")
def report(workers: int, count: int) -> dict:
    """A sync route: FastAPI runs it on its thread pool; the calls run on another."""
    with ThreadPoolExecutor(workers) as pool:
        sizes = list(
            pool.map(lambda i: len(requests.get(f"{FILES}/file/{i}.json").content), range(count))
        )
    return {"bytes": sum(sizes)}


#: Built once at import: the route only returns it, so its stall is FastAPI's serialisation
#: (no return annotation: FastAPI's jsonable_encoder walks every value, in the loop).
EXPORT = [{"id": i, "name": f"item {i}", "tags": ["x", "y"], "price": i / 7} for i in range(30_000)]


@app.get("/export")
async def export():
    return EXPORT
