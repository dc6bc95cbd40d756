"""A quotes service that fans out to a rate-limited upstream, written four ways: a plain
gather, a semaphore, retries at once on 429, and retries after the wait the 429 asks for
(its whole-second Retry-After); and one that first calls a route answering 429 by its own
status (`/mixed`). Every route answers 200 with the statuses it got."""

import asyncio
import os
from collections import Counter
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

QUOTES = os.environ["FANOUT_UPSTREAM_URL"]
TRIES = 4  # one call and at most 3 retries


@asynccontextmanager
async def lifespan(app: FastAPI):
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=QUOTES, limits=limits, timeout=60) as app.state.http:
        yield


app = FastAPI(lifespan=lifespan)


async def _once(i: int) -> int:
    return (await app.state.http.get(f"/quote/{i}")).status_code


async def _retry_now(i: int) -> int:
    for _ in range(TRIES):
        status = await _once(i)
        if status != 429:
            break
    return status


async def _retry_after(i: int) -> int:
    for _ in range(TRIES):
        answer = await app.state.http.get(f"/quote/{i}")
        if answer.status_code != 429:
            break
        await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
    return answer.status_code


def _counted(statuses: list[int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(statuses).items())}


@app.get("/gather/{n}")
async def gather(n: int) -> dict:
    return _counted(await asyncio.gather(*(_once(i) for i in range(n))))


@app.get("/semaphore/{n}")
async def semaphore(n: int) -> dict:
    bound = asyncio.Semaphore(5)

    async def call(i: int) -> int:
        async with bound:
            return await _once(i)

    return _counted(await asyncio.gather(*(call(i) for i in range(n))))


@app.get("/retry-now/{n}")
async def retry_now(n: int) -> dict:
    return _counted(await asyncio.gather(*(_retry_now(i) for i in range(n))))


@app.get("/retry-after/{n}")
async def retry_after(n: int) -> dict:
    return _counted(await asyncio.gather(*(_retry_after(i) for i in range(n))))


@app.get("/mixed/{n}")
async def mixed(n: int) -> dict:
    """Two calls one after the other to /busy (answered 429 by the route itself), then a
    gather of `n`: the /busy calls take two of the bucket's tokens first."""
    busy = [(await app.state.http.get(f"/busy/{i}")).status_code for i in range(2)]
    return _counted(busy + await asyncio.gather(*(_once(i) for i in range(n))))


@app.get("/strict/{n}")
async def strict(n: int) -> dict:
    """Fails on any 429 (raise_for_status): the request answers 500 when the limit bites."""

    async def one(i: int) -> int:
        answer = await app.state.http.get(f"/quote/{i}")
        answer.raise_for_status()
        return answer.status_code

    return _counted(await asyncio.gather(*(one(i) for i in range(n))))
