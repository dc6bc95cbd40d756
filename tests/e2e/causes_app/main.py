"""A service whose routes each show one cause `diagnose()` reads off the structure, beside
its fix: a loop of calls and its gather, a two-stage endpoint (dependent, not a loop), a
stream that waits for every call and one that sends each answer as it comes, a client
built per call and never closed, a small keep-alive pool, and a shared client."""

import asyncio
import os

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

UPSTREAM = os.environ["FANOUT_UPSTREAM_URL"]
#: The loop's calls: one route, one at a time.
LOOP_N = 30
#: The connection routes' fan-out.
FAN = 6

app = FastAPI()
shared = httpx.AsyncClient(timeout=10)
#: Keeps 2 connections alive: the other FAN - 2 are opened anew every time.
small_keepalive = httpx.AsyncClient(
    timeout=10, limits=httpx.Limits(max_connections=None, max_keepalive_connections=2)
)
#: Never closed, never collected: what a client built per call and dropped amounts to
#: while anything (an SDK's retry state, a cache, a cycle) still holds it.
_dropped: list[httpx.AsyncClient] = []


@app.get("/loop")
async def loop() -> dict:
    statuses = []
    for i in range(LOOP_N):
        statuses.append((await shared.get(f"{UPSTREAM}/item/{i}")).status_code)
    return {"statuses": statuses}


@app.get("/gathered")
async def gathered() -> dict:
    answers = await asyncio.gather(*(shared.get(f"{UPSTREAM}/item/{i}") for i in range(LOOP_N)))
    return {"statuses": [a.status_code for a in answers]}


@app.get("/two-stage")
async def two_stage() -> dict:
    user = (await shared.get(f"{UPSTREAM}/user/1")).json()
    orders = await shared.get(f"{UPSTREAM}/orders/{user['org']}")
    return {"orders": orders.status_code}


def _models() -> list:
    return [shared.get(f"{UPSTREAM}/model/{name}") for name in ("a", "b", "c")]


@app.get("/stream-buffered")
async def stream_buffered() -> StreamingResponse:
    async def pieces():
        answers = await asyncio.gather(*_models())
        for answer in answers:
            yield f"{answer.status_code}\n"

    return StreamingResponse(pieces(), media_type="text/plain")


@app.get("/stream-each")
async def stream_each() -> StreamingResponse:
    async def pieces():
        for done in asyncio.as_completed(_models()):
            yield f"{(await done).status_code}\n"

    return StreamingResponse(pieces(), media_type="text/plain")


async def _leaky_get(url: str) -> int:
    client = httpx.AsyncClient(timeout=10, verify=False)  # never closed
    _dropped.append(client)
    return (await client.get(url)).status_code


@app.get("/leak")
async def leak() -> dict:
    return {
        "statuses": await asyncio.gather(*(_leaky_get(f"{UPSTREAM}/item/{i}") for i in range(FAN)))
    }


@app.get("/small-pool")
async def small_pool() -> dict:
    answers = await asyncio.gather(
        *(small_keepalive.get(f"{UPSTREAM}/item/{i}") for i in range(FAN))
    )
    return {"statuses": [a.status_code for a in answers]}


@app.get("/shared")
async def shared_client() -> dict:
    answers = await asyncio.gather(*(shared.get(f"{UPSTREAM}/item/{i}") for i in range(FAN)))
    return {"statuses": [a.status_code for a in answers]}


@app.get("/pages")
async def pages() -> dict:
    """Three pages in turn, each asked with the cursor the one before gave: dependent."""
    cursor, seen = "c", []
    for _ in range(3):
        cursor = (await shared.get(f"{UPSTREAM}/page/{cursor}")).json()["next"]
        seen.append(cursor)
    return {"seen": seen}


@app.get("/pages-known")
async def pages_known() -> dict:
    """Three pages in turn whose names the code knows: one round would do."""
    names = [(await shared.get(f"{UPSTREAM}/page/{name}")).json()["next"] for name in "abc"]
    return {"seen": names}
