"""The entry point of every server process the harness starts.

`python -m pytest_fanout.servers.child --fd N --app MODULE:ATTR` serves a web app
(ASGI 3 or WSGI under uvicorn, an aiohttp Application under aiohttp's runner:
`apps.py` tells which from the object) on a socket the PARENT bound and
listened on (so there is no port race), optionally wrapped in the loop probe.
The child ends itself when its stdin closes: if the parent dies, even by SIGKILL, no orphan is left.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from pytest_fanout.servers.apps import (
    AIOHTTP,
    ImportFromStringError,
    NotAnAppError,
    app_kind,
    import_from_string,
    prepare,
    serve_aiohttp,
)

#: The reference app's package: its framework is the `reference` extra, not a dependency.
REFERENCE_APP_PACKAGE = "pytest_fanout.reference_app"
#: Exit status when the app cannot even be loaded (uvicorn itself uses 3 for startup failures).
LOAD_FAILED = 4


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pytest_fanout.servers.child")
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--app", required=True, help="the app's import string, MODULE:ATTR")
    parser.add_argument("--factory", action="store_true", help="APP is a factory to call")
    parser.add_argument("--probe", action="store_true", help="wrap the app in the loop probe")
    parser.add_argument("--app-dir", default="", help="directory put first on sys.path")
    parser.add_argument("--log-level", default="warning")
    # "auto": an app without lifespan support (a WSGI adapter, a bare ASGI function) still
    # starts, and a lifespan that fails still stops the start.
    parser.add_argument("--lifespan", default="auto", choices=["on", "off", "auto"])
    parser.add_argument(
        "--http",
        default="auto",
        help="uvicorn's HTTP protocol: auto, h11, httptools or MODULE:CLASS",
    )
    parser.add_argument(
        "--timeout-keep-alive", type=int, default=5, help="seconds an idle connection stays open"
    )
    # The stub's: no X-Forwarded-* rewriting and no `server` header on each answer (work
    # uvicorn does per request that a loopback stub never needs).
    parser.add_argument("--no-proxy-headers", dest="proxy_headers", action="store_false")
    parser.add_argument("--no-server-header", dest="server_header", action="store_false")
    parser.add_argument(
        "--stub-server",
        action="store_true",
        help="serve a stub upstream with its own HTTP server (servers/stubhttp.py), not uvicorn",
    )
    return parser.parse_args(argv)


def _die_with_parent(grace_s: float = 3.0) -> None:
    """Block on stdin; at EOF the parent is gone: stop gracefully, then for sure."""

    def watch() -> None:
        # os.read on the raw descriptor: a buffered sys.stdin would hold a lock
        # that the interpreter cannot take back at shutdown.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Timer(grace_s, os._exit, args=(1,)).start()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def load_app(spec: str, *, factory: bool) -> tuple[object, str]:
    """(the app, its kind); raise ImportFromStringError, NotAnAppError (one line) or
    whatever the app's module raised."""
    app = import_from_string(spec)
    if factory:
        app = app()
    return app, app_kind(app)


def _serve_uvicorn(app: object, sock: socket.socket, args: argparse.Namespace) -> int:
    import uvicorn  # here: a stub upstream serves on its own server and never needs it

    config = uvicorn.Config(
        app,
        lifespan=args.lifespan,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
        http=args.http,
        timeout_keep_alive=args.timeout_keep_alive,
        proxy_headers=args.proxy_headers,
        server_header=args.server_header,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    # uvicorn returns normally after a failed startup: its own exit status is 3.
    return 0 if server.started else 3


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.app_dir:
        sys.path.insert(0, os.path.abspath(args.app_dir))
    elif "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _die_with_parent()
    try:
        app, kind = load_app(args.app, factory=args.factory)
        app = prepare(app, kind, probe=args.probe)
    except ImportFromStringError as exc:
        print(f"fanout child: cannot import app {args.app!r}: {exc}", file=sys.stderr)
        return LOAD_FAILED
    except ModuleNotFoundError as exc:
        if args.app.startswith(REFERENCE_APP_PACKAGE + "."):
            print(
                f"fanout child: the reference app needs {exc.name}, which is not installed: "
                "pip install 'pytest-fanout[reference]' (or give your own app)",
                file=sys.stderr,
            )
        else:
            print(f"fanout child: loading app {args.app!r}: {exc}", file=sys.stderr)
        return LOAD_FAILED
    except NotAnAppError as exc:
        print(f"fanout child: {args.app!r} is not a web app: {exc}", file=sys.stderr)
        return LOAD_FAILED
    except Exception as exc:
        print(
            f"fanout child: loading app {args.app!r} raised {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return LOAD_FAILED
    sock = socket.socket(fileno=args.fd)
    if args.stub_server:
        from pytest_fanout.servers.stubhttp import serve_stub

        return serve_stub(app, sock, keep_alive_s=args.timeout_keep_alive)  # type: ignore[arg-type]
    if kind == AIOHTTP:
        return 0 if serve_aiohttp(app, sock, probe=args.probe) else 3
    return _serve_uvicorn(app, sock, args)


if __name__ == "__main__":
    sys.exit(main())
