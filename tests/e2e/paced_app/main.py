"""Calls one at a time for three reasons, beside the fix of each: a loop that awaits each
call (gather fixes it), calls gathered behind a rate limiter (one at a time by design: the
pace the upstream allows), and a blocking client inside `async def` (gathering it overlaps
nothing; an async client fixes it); and 120 calls gathered on aiohttp's default session
(its pool of 100 caps them) beside a session without that cap."""

import asyncio
import os

import aiohttp
import httpx
from aiolimiter import AsyncLimiter
from fastapi import FastAPI

UPSTREAM = os.environ["FANOUT_UPSTREAM_URL"]
#: Calls per request.
N = 4

#: Calls the pool routes gather: more than the default pool of 100.
WIDE = 120

app = FastAPI()
shared = httpx.AsyncClient(timeout=10)
blocking = httpx.Client(timeout=10)
#: One call every 0.2 s (5/s), no burst: every request's calls go one at a time.
limiter = AsyncLimiter(1, 0.2)


@app.get("/loop")
async def loop() -> dict:
    statuses = [(await shared.get(f"{UPSTREAM}/item/{i}")).status_code for i in range(N)]
    return {"statuses": statuses}


@app.get("/gathered")
async def gathered() -> dict:
    answers = await asyncio.gather(*(shared.get(f"{UPSTREAM}/item/{i}") for i in range(N)))
    return {"statuses": [a.status_code for a in answers]}


async def _paced(i: int) -> int:
    async with limiter:
        return (await shared.get(f"{UPSTREAM}/item/{i}")).status_code


@app.get("/paced")
async def paced() -> dict:
    return {"statuses": list(await asyncio.gather(*(_paced(i) for i in range(N))))}


@app.get("/blocking")
async def blocking_calls() -> dict:
    return {"statuses": [blocking.get(f"{UPSTREAM}/item/{i}").status_code for i in range(N)]}


async def _wide(connector: aiohttp.TCPConnector) -> dict:
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> int:
            async with session.get(f"{UPSTREAM}/item/{i}") as answer:
                return answer.status

        return {"statuses": list(await asyncio.gather(*(one(i) for i in range(WIDE))))}


@app.get("/default-pool")
async def default_pool() -> dict:
    return await _wide(aiohttp.TCPConnector())  # limit=100 by default


@app.get("/no-pool-cap")
async def no_pool_cap() -> dict:
    return await _wide(aiohttp.TCPConnector(limit=0))
