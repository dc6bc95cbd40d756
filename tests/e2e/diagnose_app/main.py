"""A small service with one route per fan-out mistake the harness diagnoses, and one healthy
route. Each route is wrong in exactly one way, so each must give exactly its finding."""

import asyncio
import os
import time

import helpers
import httpx
from fastapi import FastAPI

N = 10
#: The sequential route's calls: few, since they take a whole delay each.
SEQUENTIAL_N = 4
MAIN = os.environ["FANOUT_UPSTREAM_URL"]
LIMITED = os.environ.get("LIMITED_URL", MAIN)
FLAKY = os.environ.get("FLAKY_URL", MAIN)

app = FastAPI()
#: Shared clients, built once, one per upstream: the default pool keeps 20 connections
#: alive (for all hosts together), enough for N calls to one upstream.
shared = httpx.AsyncClient(timeout=10)
shared_limited = httpx.AsyncClient(timeout=10)
shared_flaky = httpx.AsyncClient(timeout=10)
#: A pool that keeps only 2 connections alive: the other N - 2 are opened anew every time.
small_keepalive = httpx.AsyncClient(
    timeout=10, limits=httpx.Limits(max_connections=None, max_keepalive_connections=2)
)
#: A pool of at most 4 connections: never more than 4 calls in flight.
capped = httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=4))


async def _gather(client: httpx.AsyncClient, base: str) -> list[int]:
    answers = await asyncio.gather(*(client.get(f"{base}/item/{i}") for i in range(N)))
    return [a.status_code for a in answers]


@app.get("/healthy")
async def healthy() -> dict:
    return {"statuses": await _gather(shared, MAIN)}


@app.get("/blocking-io")
async def blocking_io() -> dict:
    return {"status": helpers.load_rates()}


@app.get("/sleep")
async def sleepy() -> dict:
    time.sleep(0.3)
    return {}


@app.get("/cpu")
async def cpu() -> dict:
    return {"total": helpers.crunch()}


@app.get("/sequential")
async def sequential() -> dict:
    calls = range(SEQUENTIAL_N)
    return {"statuses": [(await shared.get(f"{MAIN}/item/{i}")).status_code for i in calls]}


async def _get_with_own_client(url: str) -> int:
    # verify=False: no TLS context to build (~15 ms of CPU each), so this route
    # only churns connections and does not also block the loop.
    async with httpx.AsyncClient(timeout=10, verify=False) as client:
        return (await client.get(url)).status_code


@app.get("/client-per-call")
async def client_per_call() -> dict:
    calls = (_get_with_own_client(f"{MAIN}/item/{i}") for i in range(N))
    return {"statuses": list(await asyncio.gather(*calls))}


@app.get("/small-keepalive")
async def churn() -> dict:
    return {"statuses": await _gather(small_keepalive, MAIN)}


@app.get("/pool-capped")
async def pool_capped() -> dict:
    return {"statuses": await _gather(capped, MAIN)}


@app.get("/limited")
async def limited() -> dict:
    return {"statuses": await _gather(shared_limited, LIMITED)}


@app.get("/flaky")
async def flaky() -> dict:
    return {"statuses": await _gather(shared_flaky, FLAKY)}
