"""Which kind of web app an object is, and how the child process serves it.

Users bring FastAPI, Starlette, Litestar, Quart or Django (ASGI 3), Flask or
Django (WSGI), or aiohttp's own `web.Application`. The kind is read off the
object (never from a flag the user must get right): an aiohttp Application
by its type, ASGI 3 by an `async` callable of (scope, receive, send), WSGI by
a plain callable of (environ, start_response). Anything else is refused in
one line that names what was found and what is accepted.

ASGI apps run under uvicorn; WSGI apps under uvicorn through a2wsgi (the
adapter uvicorn itself recommends since its own WSGI middleware was
deprecated), which runs each request in a thread of its pool
(PYTEST_FANOUT_WSGI_THREADS, default 10, like a WSGI server's threads); an
aiohttp Application under aiohttp's own runner, its startup and cleanup hooks
included. The loop probe wraps all three.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

ASGI3 = "asgi3"
WSGI = "wsgi"
AIOHTTP = "aiohttp"
#: What the harness accepts, for the one-line refusal.
ACCEPTED = (
    "an ASGI 3 app (FastAPI, Starlette, Litestar, Quart, Django: async (scope, receive, send)), "
    "a WSGI app (Flask, Django: (environ, start_response)) or an aiohttp.web.Application"
)
#: Threads of the WSGI adapter's pool: how many requests a WSGI app serves at once.
WSGI_THREADS_ENV = "PYTEST_FANOUT_WSGI_THREADS"
DEFAULT_WSGI_THREADS = 10
MAX_WSGI_THREADS = 1000


class NotAnAppError(TypeError):
    """The object is no web app the harness can serve; `str()` is one line."""


class ImportFromStringError(ImportError):
    """`MODULE:ATTR` names no module or attribute; `str()` is one line."""


def import_from_string(spec: str) -> Any:
    """The object `MODULE:ATTR` names (ATTR may be dotted), with uvicorn's one-line messages.

    Ours, not `uvicorn.importer`'s: importing that module imports all of uvicorn (50 ms of CPU),
    and a stub upstream, started hundreds of times in a test run, serves on its own server
    (`stubhttp.py`) and never needs it. An error raised inside the module propagates as is.
    """
    module_name, _, attrs = spec.partition(":")
    if not module_name or not attrs:
        raise ImportFromStringError(
            f'Import string "{spec}" must be in format "<module>:<attribute>".'
        )
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ImportFromStringError(f'Could not import module "{module_name}".') from None
    try:
        for attr in attrs.split("."):
            found = getattr(found, attr)
    except AttributeError:
        raise ImportFromStringError(
            f'Attribute "{attrs}" not found in module "{module_name}".'
        ) from None
    return found


def _found(app: object) -> str:
    kind = type(app)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"a {name}"


def _positional(call: Callable[..., Any]) -> tuple[int, int, bool] | None:
    """(required, most, takes *args) positional parameters of `call`; None if unreadable."""
    try:
        params = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    required = sum(1 for p in positional if p.default is inspect.Parameter.empty)
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return required, len(positional), varargs


def _takes(shape: tuple[int, int, bool], count: int) -> bool:
    required, most, varargs = shape
    return required <= count and (count <= most or varargs)


def app_kind(app: object) -> str:
    """ASGI3, WSGI or AIOHTTP for `app`; a NotAnAppError (one line) for anything else."""
    aiohttp_web = sys.modules.get("aiohttp.web")
    if aiohttp_web is not None and isinstance(app, aiohttp_web.Application):
        return AIOHTTP
    if inspect.isawaitable(app):
        return AIOHTTP  # an async factory's answer (aiohttp's convention): checked once awaited
    if inspect.isclass(app):
        raise NotAnAppError(
            f"found the class {app.__qualname__}, not an app: give an instance "
            f"(or set fanout_app_factory for a factory); accepted: {ACCEPTED}"
        )
    if not callable(app):
        raise NotAnAppError(f"found {_found(app)}, which is not callable; accepted: {ACCEPTED}")
    call = app if inspect.isroutine(app) else type(app).__call__
    is_async = inspect.iscoroutinefunction(call)
    shape = _positional(app)
    if shape is None:
        if is_async:
            return ASGI3
        raise NotAnAppError(
            f"found {_found(app)} whose parameters cannot be read; accepted: {ACCEPTED}"
        )
    if is_async and _takes(shape, 3):
        return ASGI3
    if not is_async and shape[:2] == (2, 2):
        return WSGI
    if not is_async and shape[:2] == (3, 3):
        return ASGI3  # a plain function returning an awaitable, as some wrappers are
    if not is_async and shape[:2] == (1, 1):
        raise NotAnAppError(
            f"found {_found(app)} taking one argument: an ASGI 2 app (or a factory: "
            f"set fanout_app_factory); accepted: {ACCEPTED}"
        )
    raise NotAnAppError(
        f"found {_found(app)} taking {shape[0]} positional argument(s)"
        f"{' (async)' if is_async else ''}; accepted: {ACCEPTED}"
    )


def wsgi_threads(environ: dict[str, str] | None = None) -> int:
    """The WSGI pool's size from PYTEST_FANOUT_WSGI_THREADS (a ValueError in one line)."""
    env = os.environ if environ is None else environ
    raw = env.get(WSGI_THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_WSGI_THREADS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WSGI_THREADS:
        raise ValueError(
            f"{WSGI_THREADS_ENV}={raw!r} must be a whole number from 1 to {MAX_WSGI_THREADS}"
        )
    return int(raw)


def prepare(app: Any, kind: str, *, probe: bool) -> Any:
    """What the child serves: for ASGI3 and WSGI the ASGI 3 app uvicorn runs, for AIOHTTP the
    Application itself; wrapped in the loop probe when `probe` (raises ValueError, one line,
    for a setting the probe or the adapter cannot use)."""
    if kind == AIOHTTP:
        if probe and not inspect.isawaitable(app):
            app.middlewares.insert(0, _probe_middleware())
        return app
    if kind == WSGI:
        from a2wsgi import WSGIMiddleware

        app = WSGIMiddleware(app, workers=wsgi_threads())
    if probe:
        from pytest_fanout.servers.probe import LoopProbe

        app = LoopProbe(app)
    return app


# ---- aiohttp, under its own runner -------------------------------------------------------


def _probe_middleware() -> Any:
    """An aiohttp middleware that runs every request through a LoopProbe (ASGI), so the
    probe counts, times and serves its path exactly as it does for an ASGI app."""
    from aiohttp import web

    from pytest_fanout.servers.probe import PROBE_PATH, LoopProbe

    async def dispatch(scope: dict, receive: Any, send: Any) -> None:
        scope["fanout.response"] = await scope["fanout.handler"](scope["fanout.request"])

    probe = LoopProbe(dispatch)

    @web.middleware
    async def loop_probe(request: web.Request, handler: Callable[..., Awaitable[Any]]) -> Any:
        scope: dict[str, Any] = {
            "type": "http",
            "method": request.method,
            "path": request.path,
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
        }
        if request.path == PROBE_PATH:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await probe(scope, None, send)
            return web.Response(
                status=sent[0]["status"], body=sent[1]["body"], content_type="application/json"
            )
        scope["fanout.handler"], scope["fanout.request"] = handler, request
        await probe(scope, None, None)
        return scope["fanout.response"]

    return loop_probe


async def _awaited_app(app: Any, probe: bool) -> Any:
    """An async factory's Application, awaited in the loop that serves it (its sessions
    belong to that loop); None, after one line, when it raised or gave something else."""
    from aiohttp import web

    try:
        app = await app
        if not isinstance(app, web.Application):
            print(
                f"fanout child: the app factory gave {_found(app)}, not an app; "
                f"accepted: {ACCEPTED}",
                file=sys.stderr,
            )
            return None
        if probe:
            app.middlewares.insert(0, _probe_middleware())
    except Exception as exc:
        print(f"fanout child: the app factory raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return app


async def _serve_aiohttp(app: Any, sock: socket.socket, probe: bool) -> bool:
    from aiohttp import web

    if inspect.isawaitable(app):
        app = await _awaited_app(app, probe)
        if app is None:
            return False
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await runner.setup()  # the app's on_startup and cleanup_ctx run here
    except Exception as exc:
        print(
            f"fanout child: the aiohttp app's startup raised {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return False
    try:
        await web.SockSite(runner, sock).start()
        await stop.wait()
    finally:
        await runner.cleanup()
    return True


def serve_aiohttp(app: Any, sock: socket.socket, *, probe: bool) -> bool:
    """Serve an aiohttp Application (or await an async factory's) on `sock` until SIGTERM;
    False if it could not start. `probe`: wrap an awaited factory's app in the loop probe
    (`prepare` did it for an Application)."""
    return asyncio.run(_serve_aiohttp(app, sock, probe))
