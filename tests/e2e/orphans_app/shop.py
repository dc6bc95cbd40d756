"""A service written the way its users write it: one shared httpx client, fan-outs with
`asyncio.gather`, `asyncio.TaskGroup` and `gather(..., return_exceptions=True)`, and
endpoints that do or do not stop when the caller hangs up. It keeps its own account of
the upstream calls (`/counters`), so the tests can check the harness's counts against it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

UPSTREAM = os.environ["FANOUT_UPSTREAM_URL"]
#: The service's own account: calls that ran to their answer, calls cancelled, and calls
#: still running when a handler returned its answer (orphans, as the service sees them).
COUNTERS = {"completed": 0, "cancelled": 0, "orphaned": 0}
client: httpx.AsyncClient


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global client
    async with httpx.AsyncClient(base_url=UPSTREAM) as shared:
        client = shared
        yield


app = FastAPI(lifespan=lifespan)


async def fetch(path: str, pending: set[str]) -> dict:
    pending.add(path)
    try:
        response = await client.get(path)
        response.raise_for_status()
        COUNTERS["completed"] += 1
        return response.json()
    except asyncio.CancelledError:
        COUNTERS["cancelled"] += 1
        raise
    except httpx.HTTPStatusError:
        COUNTERS["completed"] += 1
        raise
    finally:
        pending.discard(path)


def answer(pending: set[str], status: int, body: dict) -> JSONResponse:
    COUNTERS["orphaned"] += len(pending)  # still running as the answer leaves
    return JSONResponse(body, status_code=status)


def parts(pending: set[str], failing: bool = True) -> list:
    calls = [fetch(f"/part/{i}", pending) for i in range(3)]
    return [fetch("/fail", pending), *calls] if failing else calls


@app.get("/gather-fail")
async def gather_fail() -> JSONResponse:
    pending: set[str] = set()
    try:
        results = await asyncio.gather(*parts(pending))
    except httpx.HTTPStatusError as exc:
        return answer(pending, 502, {"error": str(exc.response.status_code)})
    return answer(pending, 200, {"parts": results})


@app.get("/taskgroup-fail")
async def taskgroup_fail() -> JSONResponse:
    pending: set[str] = set()
    failed: list[httpx.HTTPStatusError] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in parts(pending)]
    except* httpx.HTTPStatusError as errors:
        failed.extend(errors.exceptions)  # type: ignore[arg-type]
    if failed:
        return answer(pending, 502, {"error": str(failed[0].response.status_code)})
    return answer(pending, 200, {"parts": [t.result() for t in tasks]})


@app.get("/gather-settled")
async def gather_settled() -> JSONResponse:
    pending: set[str] = set()
    results = await asyncio.gather(*parts(pending), return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        return answer(pending, 502, {"error": str(failed[0])})
    return answer(pending, 200, {"parts": results})


async def five(pending: set[str]) -> list:
    return await asyncio.gather(*(fetch(f"/part/{i}", pending) for i in range(5)))


@app.get("/summary")
async def summary() -> dict:
    """Ordinary: runs to its end whether or not the caller is still there."""
    return {"parts": await five(set())}


@app.get("/summary-cancels")
async def summary_cancels(request: Request) -> JSONResponse:
    """Watches `request.receive()` for `http.disconnect` and cancels the work."""
    work = asyncio.ensure_future(five(set()))

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnected())
    done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    for task in (work, watch):
        task.cancel()
    if work in done:
        return JSONResponse({"parts": work.result()})
    return JSONResponse({"error": "client went away"}, status_code=499)


@app.get("/summary-stream")
async def summary_stream() -> StreamingResponse:
    """Streams: Starlette cancels the body when the client disconnects."""

    async def body() -> AsyncIterator[bytes]:
        yield b"["
        for part in await five(set()):
            yield (str(part) + ",").encode()
        yield b"]"

    return StreamingResponse(body(), media_type="application/json")


@app.get("/hung-no-timeout")
async def hung_no_timeout() -> dict:
    """Waits on the upstream as long as it takes (timeout=None: no timeout at all)."""
    response = await client.get("/stuck", timeout=None)
    return response.json()


@app.get("/hung-with-timeout")
async def hung_with_timeout() -> JSONResponse:
    """Gives the upstream 200 ms, then answers 504 (the call is cancelled)."""
    try:
        async with asyncio.timeout(0.2):
            response = await client.get("/stuck", timeout=None)
    except TimeoutError:
        return JSONResponse({"error": "upstream timed out"}, status_code=504)
    return JSONResponse(response.json())


@app.get("/counters")
async def counters() -> dict:
    return dict(COUNTERS)


@app.delete("/counters")
async def clear_counters() -> dict:
    COUNTERS.update(dict.fromkeys(COUNTERS, 0))
    return dict(COUNTERS)
