"""The harness measures a user's app from the outside, whatever HTTP client it uses.

Three tiny FastAPI services, written here as a user would write them, fan out
with httpx, with httpx2 and with aiohttp (one shared client built in the
lifespan, the upstream's URL from FANOUT_UPSTREAM_URL). Each runs in its own
process under the harness (`Stack` + `measure`), and the counts the stub
upstream keeps are exact whatever the client: the held probe shows a gathered
fan-out of 20 as one wave of 20 and a sequential one as 20 waves of 1, and
each makes exactly 20 calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.measure import measure
from pytest_fanout.measurement import Request
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import Stack

N = 20
#: The timed samples' delay: the structure (held waves) does not depend on it.
DELAY_MS = 200

COMMON = """
import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

UPSTREAM = os.environ["FANOUT_UPSTREAM_URL"]
"""

APPS = {
    "httpx": COMMON
    + """
import httpx


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx.AsyncClient(base_url=UPSTREAM) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/gather/{count}")
async def gather(count: int) -> dict:
    client = app.state.client
    answers = await asyncio.gather(*(client.get(f"/price/{i}") for i in range(count)))
    return {"codes": [a.status_code for a in answers]}


@app.get("/sequential/{count}")
async def sequential(count: int) -> dict:
    return {"codes": [(await app.state.client.get(f"/price/{i}")).status_code
                      for i in range(count)]}
""",
    "httpx2": COMMON
    + """
import httpx2


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx2.AsyncClient(base_url=UPSTREAM) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/gather/{count}")
async def gather(count: int) -> dict:
    client = app.state.client
    answers = await asyncio.gather(*(client.get(f"/price/{i}") for i in range(count)))
    return {"codes": [a.status_code for a in answers]}


@app.get("/sequential/{count}")
async def sequential(count: int) -> dict:
    return {"codes": [(await app.state.client.get(f"/price/{i}")).status_code
                      for i in range(count)]}
""",
    "aiohttp": COMMON
    + """
import aiohttp


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with aiohttp.ClientSession(base_url=UPSTREAM) as session:
        app.state.session = session
        yield


app = FastAPI(lifespan=lifespan)


async def status_of(path: str) -> int:
    async with app.state.session.get(path) as answer:
        await answer.read()
        return answer.status


@app.get("/gather/{count}")
async def gather(count: int) -> dict:
    codes = await asyncio.gather(*(status_of(f"/price/{i}") for i in range(count)))
    return {"codes": list(codes)}


@app.get("/sequential/{count}")
async def sequential(count: int) -> dict:
    return {"codes": [await status_of(f"/price/{i}") for i in range(count)]}
""",
}


@pytest.fixture(params=list(APPS))
def users_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """The user's service, written to disk and run by the harness as `svc_<client>:app`."""
    module = f"svc_{request.param}"
    (tmp_path / f"{module}.py").write_text(APPS[request.param])
    with Stack(f"{module}:app", app_dir=tmp_path, behaviour=Behaviour(delay_ms=DELAY_MS)) as stack:
        yield stack


def test_the_harness_measures_the_app_whatever_its_client(users_app: Stack) -> None:
    stack = users_app
    assert stack.app is not None
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        gathered = measure(
            client,
            stack.app.url,
            Request(f"/gather/{N}"),
            upstreams=stack.upstreams,
            app=stack.app,
            repeat=2,
            warmup=1,
            n=N,
            concurrency=N,
        )
        sequential = measure(
            client,
            stack.app.url,
            Request(f"/sequential/{N}"),
            upstreams=stack.upstreams,
            app=stack.app,
            repeat=1,
            warmup=0,
            n=N,
            concurrency=1,
        )
        answer = client.get(f"{stack.app.url}/gather/3").json()
    assert gathered.upstream_requests_per_sample == [N, N]
    assert gathered.structure == {"default": [N]}  # all 20 in flight at once
    assert sequential.upstream_requests_per_sample == [N]
    assert sequential.structure == {"default": [1] * N}  # one at a time
    # Speed as a ratio from the same run, with a wide margin: 20 waves against one.
    assert sequential.median_s > 5 * gathered.median_s
    assert answer == {"codes": [200, 200, 200]}
