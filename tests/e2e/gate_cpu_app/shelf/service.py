"""A service whose CPU per request is mostly its upstream calls, written as its users write
them: one client built in the lifespan, a gather, and calls behind `asyncio.Semaphore(5)`.

`GET /shelf/{n}` looks n books up at once; `GET /pages` asks for the shelf, then for 30
pages, five at a time. The gate validation (benchmarks/gate_validation.py --cpu) commits a
one-line change of the constant below: 40 microseconds of CPU after every upstream call.
"""

import asyncio
import os
import time
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI

#: CPU seconds spent after every upstream call (the validation's regression commit sets it).
CPU_PER_CALL_S = 0.0


def parse(answer: httpx2.Response) -> dict:
    """The answer's JSON, after the work a release may add to every call."""
    if CPU_PER_CALL_S:
        end = time.thread_time() + CPU_PER_CALL_S
        while time.thread_time() < end:
            pass
    answer.raise_for_status()
    return answer.json()


@asynccontextmanager
async def lifespan(app: FastAPI):
    limits = httpx2.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx2.AsyncClient(base_url=os.environ["BOOKS_URL"], limits=limits) as books:
        app.state.books = books
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/shelf/{n}")
async def shelf(n: int) -> dict:
    answers = await asyncio.gather(*(app.state.books.get(f"/books/{i}") for i in range(n)))
    return {"titles": [parse(a)["title"] for a in answers]}


@app.get("/pages")
async def pages() -> dict:
    first = parse(await app.state.books.get("/books/0"))
    gate = asyncio.Semaphore(5)

    async def page(i: int) -> dict:
        async with gate:
            return parse(await app.state.books.get(f"/pages/{i}"))

    found = await asyncio.gather(*(page(i) for i in range(30)))
    return {"book": first["title"], "pages": len(found)}
