"""A user's service with one upstream call per request, failing when the call fails:
`GET /price/{i}` asks the quotes API (FANOUT_UPSTREAM_URL) once and `raise_for_status()`s,
so a 429 from a rate-limited upstream is this service's 500 (what `fanout capacity` and
Locust count as a failure)."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"], timeout=10) as http:
        app.state.http = http
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/price/{i}")
async def price(i: int) -> dict:
    answer = await app.state.http.get(f"/quote/{i}")
    answer.raise_for_status()
    return {"price": answer.json()}
