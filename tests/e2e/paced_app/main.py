"""Calls one at a time for three reasons, beside the fix of each: a loop that awaits each
call (gather fixes it), calls gathered behind a rate limiter (one at a time by design: the
pace the upstream allows), and a blocking client inside `async def` (gathering it overlaps
nothing; an async client fixes it)."""

import asyncio
import os

import httpx
from aiolimiter import AsyncLimiter
from fastapi import FastAPI

UPSTREAM = os.environ["FANOUT_UPSTREAM_URL"]
#: Calls per request.
N = 4

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
