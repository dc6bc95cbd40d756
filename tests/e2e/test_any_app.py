"""The harness serves any Python web app, read off the object: ASGI 3 (Starlette, Litestar,
Quart, Django's ASGI handler, a bare ASGI function without lifespan support), WSGI (Flask and
Django's WSGI handler, through a2wsgi's thread pool) and an `aiohttp.web.Application` (under
aiohttp's own runner). Each is a small service written here
as a user would write it, run by `Stack` in its own process under the loop probe, and the
stub's counts are exact whatever the framework. Anything else is refused in one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.diagnosis import diagnose
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import Measurement, Request
from pytest_fanout.servers import ServerStartError, Stack
from pytest_fanout.servers.process import tls_context
from tests.helpers import measure_stack

N = 8
#: Far longer than any framework needs to start 8 calls: the peak is exact.
DELAY_MS = 200

#: A one-module Django project, as its settings.py, urls.py and views.py would be together.
DJANGO = """
import asyncio
import os

import httpx2
from django.conf import settings

settings.configure(
    SECRET_KEY="not-a-secret",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
)

from django.core.{handler} import get_{handler}_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
{views}

urlpatterns = [path("gather/<int:count>", gather), path("sequential/<int:count>", sequential)]
app = get_{handler}_application()
"""

APPS = {
    # WSGI: Flask, fanning out on a thread pool of `requests` (the sync pattern done right).
    "flask": """
import os
from concurrent.futures import ThreadPoolExecutor

import requests
from flask import Flask

UPSTREAM = os.environ["FANOUT_UPSTREAM_URL"]
session = requests.Session()
session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
pool = ThreadPoolExecutor(max_workers=32)
app = Flask(__name__)


def status_of(i):
    return session.get(f"{UPSTREAM}/price/{i}", timeout=10).status_code


@app.get("/gather/<int:count>")
def gather(count):
    return {"codes": list(pool.map(status_of, range(count)))}


@app.get("/sequential/<int:count>")
def sequential(count):
    return {"codes": [status_of(i) for i in range(count)]}
""",
    # aiohttp's own server, a shared ClientSession in its cleanup context.
    "aiohttp": """
import asyncio
import os
import time

import aiohttp
from aiohttp import web

UPSTREAM = os.environ["FANOUT_UPSTREAM_URL"]


async def session_ctx(app):
    async with aiohttp.ClientSession(base_url=UPSTREAM) as session:
        app["session"] = session
        yield


async def status_of(app, i):
    async with app["session"].get(f"/price/{i}") as answer:
        await answer.read()
        return answer.status


async def gather(request):
    count = int(request.match_info["count"])
    codes = await asyncio.gather(*(status_of(request.app, i) for i in range(count)))
    return web.json_response({"codes": list(codes)})


async def sequential(request):
    count = int(request.match_info["count"])
    return web.json_response({"codes": [await status_of(request.app, i) for i in range(count)]})


async def blocking(request):
    time.sleep(0.3)  # a sync call inside a handler: the loop probe must see it
    return web.json_response({"ok": True})


app = web.Application()
app.cleanup_ctx.append(session_ctx)
app.router.add_get("/gather/{count}", gather)
app.router.add_get("/sequential/{count}", sequential)
app.router.add_get("/blocking", blocking)
""",
    # ASGI 3 without FastAPI: Starlette with a lifespan.
    "starlette": """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app):
    async with httpx.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"]) as client:
        app.state.client = client
        yield


async def gather(request):
    client = request.app.state.client
    count = request.path_params["count"]
    answers = await asyncio.gather(*(client.get(f"/price/{i}") for i in range(count)))
    return JSONResponse({"codes": [a.status_code for a in answers]})


async def sequential(request):
    client = request.app.state.client
    count = request.path_params["count"]
    return JSONResponse({"codes": [(await client.get(f"/price/{i}")).status_code
                                   for i in range(count)]})


app = Starlette(
    routes=[Route("/gather/{count:int}", gather), Route("/sequential/{count:int}", sequential)],
    lifespan=lifespan,
)
""",
    # Litestar: a client opened in its lifespan, on app.state, handed to handlers as `state`.
    "litestar": """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx2
from litestar import Litestar, get
from litestar.datastructures import State


@asynccontextmanager
async def client(app):
    async with httpx2.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"]) as shared:
        app.state.client = shared
        yield


@get("/gather/{count:int}")
async def gather(count: int, state: State) -> dict:
    answers = await asyncio.gather(*(state.client.get(f"/price/{i}") for i in range(count)))
    return {"codes": [a.status_code for a in answers]}


@get("/sequential/{count:int}")
async def sequential(count: int, state: State) -> dict:
    return {"codes": [(await state.client.get(f"/price/{i}")).status_code for i in range(count)]}


app = Litestar(route_handlers=[gather, sequential], lifespan=[client])
""",
    # Quart: a client opened before serving and closed after.
    "quart": """
import asyncio
import os

import httpx2
from quart import Quart

app = Quart(__name__)


@app.before_serving
async def open_client():
    app.client = httpx2.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"])


@app.after_serving
async def close_client():
    await app.client.aclose()


@app.get("/gather/<int:count>")
async def gather(count):
    answers = await asyncio.gather(*(app.client.get(f"/price/{i}") for i in range(count)))
    return {"codes": [a.status_code for a in answers]}


@app.get("/sequential/<int:count>")
async def sequential(count):
    return {"codes": [(await app.client.get(f"/price/{i}")).status_code for i in range(count)]}
""",
    # Django's ASGI handler, async views: no lifespan, so the shared client opens on first use.
    "django_asgi": DJANGO.format(
        handler="asgi",
        views="""
_client = None


def client():
    global _client
    if _client is None:
        _client = httpx2.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"])
    return _client


async def gather(request, count):
    answers = await asyncio.gather(*(client().get(f"/price/{i}") for i in range(count)))
    return JsonResponse({"codes": [a.status_code for a in answers]})


async def sequential(request, count):
    return JsonResponse({"codes": [(await client().get(f"/price/{i}")).status_code
                                   for i in range(count)]})
""",
    ),
    # Django's WSGI handler, sync views: a shared client and a thread pool.
    "django_wsgi": DJANGO.format(
        handler="wsgi",
        views="""
from concurrent.futures import ThreadPoolExecutor

shared = httpx2.Client(base_url=os.environ["FANOUT_UPSTREAM_URL"])
pool = ThreadPoolExecutor(max_workers=16)


def status_of(i):
    return shared.get(f"/price/{i}").status_code


def gather(request, count):
    return JsonResponse({"codes": list(pool.map(status_of, range(count)))})


def sequential(request, count):
    return JsonResponse({"codes": [status_of(i) for i in range(count)]})
""",
    ),
}


@pytest.fixture(params=list(APPS))
def users_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    module = f"svc_{request.param}"
    (tmp_path / f"{module}.py").write_text(APPS[request.param])
    with Stack(f"{module}:app", app_dir=tmp_path, behaviour=Behaviour(delay_ms=DELAY_MS)) as stack:
        yield stack


def take(stack: Stack, client: httpx2.Client, path: str, concurrency: int) -> Measurement:
    return measure_stack(stack, client, Request(path), n=N, concurrency=concurrency)


def test_every_kind_of_app_is_measured_exactly(users_app: Stack) -> None:
    assert users_app.app is not None
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        gathered = take(users_app, client, f"/gather/{N}", N)
        sequential = take(users_app, client, f"/sequential/{N}", N)
        answer = client.get(f"{users_app.app.url}/gather/3").json()
    assert answer == {"codes": [200, 200, 200]}
    assert gathered.upstream_requests_per_sample == [N, N]
    assert gathered.upstream_peak_per_sample == [N, N]
    assert sequential.upstream_peak_per_sample == [1, 1]
    # The probe ran around each app: it was read after every sample.
    assert len(gathered.loop_lag_per_sample) == 2
    assert all(cpu > 0 for cpu in gathered.app_cpu_per_sample)
    # Diagnosis reads the same evidence whatever the framework.
    assert [f.kind for f in diagnose(gathered)] == []
    assert [f.kind for f in diagnose(sequential)] == ["sequential"]
    # Speed as a ratio from the same run, with a wide margin: 8 waves against one.
    assert sequential.median_s > 3 * gathered.median_s


def test_a_blocking_aiohttp_handler_is_seen_by_the_probe(tmp_path: Path) -> None:
    (tmp_path / "svc_aio.py").write_text(APPS["aiohttp"])
    with (
        Stack("svc_aio:app", app_dir=tmp_path, behaviour=Behaviour(delay_ms=DELAY_MS)) as stack,
        httpx2.Client(timeout=60, verify=tls_context()) as client,
    ):
        m = take(stack, client, "/blocking", 1)
    assert m.loop_lag_max_s > 0.2  # the 300 ms sleep held the loop
    assert [f.kind for f in diagnose(m)][:1] == ["blocks-loop"]
    assert "svc_aio.py" in diagnose(m)[0].message


def test_an_aiohttp_async_factory_is_awaited_in_the_serving_loop(tmp_path: Path) -> None:
    (tmp_path / "aio_factory.py").write_text(
        """
import aiohttp
from aiohttp import web


async def create_app():
    session = aiohttp.ClientSession()  # needs the loop that will serve the app

    async def close(app):
        await session.close()

    async def hello(request):
        return web.json_response({"loop_bound": not session.closed})

    app = web.Application()
    app.on_cleanup.append(close)
    app.router.add_get("/hello", hello)
    return app
"""
    )
    with Stack("aio_factory:create_app", app_dir=tmp_path, factory=True) as stack:
        assert stack.app is not None
        assert httpx2.get(stack.app.url + "/hello", verify=tls_context()).json() == {
            "loop_bound": True
        }
        assert stack.app.probe_stats()["requests"] == 1  # the probe wraps it too


def test_a_bare_asgi_function_without_lifespan_starts(tmp_path: Path) -> None:
    (tmp_path / "bare.py").write_text(
        """
async def app(scope, receive, send):
    assert scope["type"] == "http", "no lifespan here"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"bare"})
"""
    )
    with Stack("bare:app", app_dir=tmp_path) as stack:
        assert stack.app is not None
        assert httpx2.get(stack.app.url + "/x", verify=tls_context()).text == "bare"


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("app = {'routes': []}", "found a dict, which is not callable"),
        ("from flask import Flask as app", "found the class Flask, not an app"),
        ("def app(scope):\n    pass", "found a function taking one argument: an ASGI 2 app"),
    ],
    ids=["dict", "class", "asgi2"],
)
def test_anything_else_is_one_line_naming_what_was_found(
    tmp_path: Path, source: str, found: str
) -> None:
    (tmp_path / "odd.py").write_text(source + "\n")
    with pytest.raises(ServerStartError) as caught:
        Stack("odd:app", app_dir=tmp_path, startup_timeout=20).start()
    message = str(caught.value)
    assert "\n" not in message
    assert f"exited with status 4 before answering: 'odd:app' is not a web app: {found}" in (
        message
    )
    assert "accepted: an ASGI 3 app" in message
