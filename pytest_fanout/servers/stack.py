"""The stack under test: stub upstreams and the app, each in its own process.

`StubUpstreamServer` and `AppServer` add their control endpoints to a
`ServerProcess`; `Stack` starts one stub per named upstream (in parallel),
then the app with each stub's URL in the environment variable it names
(`FANOUT_UPSTREAM_URL` for the single default upstream). The plugin's
fixtures, `fanout serve`, `fanout patterns` and the locustfiles all run this
same stack.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import httpx2

from pytest_fanout.servers import cleanup
from pytest_fanout.servers.probe import PROBE_PATH
from pytest_fanout.servers.process import LOOPBACK, ServerProcess
from pytest_fanout.servers.routes import (
    RouteError,
    compile_template,
    strict_json_dumps,
    strict_json_loads,
)
from pytest_fanout.servers.upstream import CONTROL_PREFIX, TOKEN_ENV, Behaviour

#: The reference app, as installed from the wheel and (editable) in the repository,
#: where app/ is mapped onto this name (pyproject.toml); `uvicorn app.main:app` from
#: the repository root serves the same code.
DEFAULT_APP = "pytest_fanout.reference_app.main:app"
#: The name of the one upstream a stack has when none is named, and its variable.
DEFAULT_UPSTREAM = "default"
DEFAULT_UPSTREAM_ENV = "FANOUT_UPSTREAM_URL"
_ROUTE_FIELDS = (
    "status",
    "json",
    "body",
    "headers",
    "delay_ms",
    "jitter_ms",
    "p99_ms",
    "error_rate",
    "handler",
)


class UpstreamCallError(AssertionError):
    """`assert_called` did not hold."""


@dataclass
class RecordedRequest:
    """One request a stub upstream saw, as `upstream.requests()` returns it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    #: The body was longer than the stub keeps (record_body_bytes): `body` is its start.
    body_truncated: bool
    #: The delay the stub chose for it (ms) and the status it answered (0: no answer).
    delay_ms: float
    status: int

    def json(self) -> Any:
        return strict_json_loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RecordedRequest:
        return cls(
            method=data["method"],
            path=data["path"],
            query=data["query"],
            headers={k.lower(): v for k, v in data["headers"]},
            body=base64.b64decode(data["body_b64"]),
            body_truncated=data["body_truncated"],
            delay_ms=data["delay_ms"],
            status=data["status"],
        )


class StubUpstreamServer(ServerProcess):
    """A stub upstream in a child process: gauge, behaviour, routes and recorded requests
    one call away. `name` is the upstream's name in the stack (`inventory`, `pricing`)."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        name: str = DEFAULT_UPSTREAM,
        host: str = LOOPBACK,
        port: int = 0,
        startup_timeout: float = 10.0,
        app_dir: str | os.PathLike[str] | None = None,
        token: str | None = None,
    ) -> None:
        self.initial = behaviour or Behaviour()
        self.initial.validate()
        self.upstream_name = name
        #: The control paths' bearer token (random for each server unless given).
        self.token = token or secrets.token_urlsafe(24)
        server_name = "upstream" if name == DEFAULT_UPSTREAM else f"upstream-{name}"
        super().__init__(
            "pytest_fanout.servers.upstream:app_from_env",
            name=server_name,
            env={**self.initial.to_env(), TOKEN_ENV: self.token},
            factory=True,
            host=host,
            port=port,
            app_dir=app_dir,
            ready_path=CONTROL_PREFIX + "stats",
            startup_timeout=startup_timeout,
        )

    def build_command(self, fd: int) -> list[str]:
        # uvicorn's HTTP protocol with connection counting (a public uvicorn setting).
        return [
            *super().build_command(fd),
            "--http",
            "pytest_fanout.servers.connections:CountingHTTPProtocol",
        ]

    @property
    def control(self) -> httpx2.Client:
        client = super().control
        client.headers["Authorization"] = f"Bearer {self.token}"
        return client

    def _checked(self, response: httpx2.Response, what: str) -> Any:
        if response.status_code in (413, 422):
            raise ValueError(
                f"upstream {self.upstream_name!r} refused {what}: {response.json()['detail']}"
            )
        return response.raise_for_status().json()

    # ---- gauge and behaviour --------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """requests, inflight, peak_inflight, completed, errors, rejected, dropped,
        connections (first used since the reset), inflight_now (all calls in flight)."""
        return self.control.get(CONTROL_PREFIX + "stats").raise_for_status().json()

    def reset(self, wait_idle_s: float = 0.0) -> dict[str, int]:
        """Zero the gauge. With `wait_idle_s`, first wait (at most that long) until no call
        is in flight; the answer says how many were (`in_flight_before`) and `idle`."""
        params = {"wait_idle_s": wait_idle_s} if wait_idle_s else None
        timeout = httpx2.Timeout(10 + wait_idle_s)
        response = self.control.post(CONTROL_PREFIX + "reset", params=params, timeout=timeout)
        return response.raise_for_status().json()

    def behaviour(self) -> Behaviour:
        return Behaviour(**self.control.get(CONTROL_PREFIX + "config").raise_for_status().json())

    def configure(self, **changes: Any) -> Behaviour:
        """Change delay_ms, jitter_ms, p99_ms, error_rate, error_status, drop_rate,
        max_inflight, record_requests, record_body_bytes or seed."""
        __tracebackhide__ = True
        try:
            body = strict_json_dumps(changes)
        except ValueError as exc:
            raise ValueError(f"upstream {self.upstream_name!r}: {exc}") from None
        response = self.control.post(CONTROL_PREFIX + "config", content=body)
        return Behaviour(**self._checked(response, f"configure({_kwargs(changes)})"))

    def restore(self) -> Behaviour:
        """Back to the behaviour it started with; no routes, no recorded requests."""
        response = self.control.post(CONTROL_PREFIX + "restore", json=asdict(self.initial))
        return Behaviour(**self._checked(response, "restore()"))

    # ---- routes -----------------------------------------------------------------------------

    def route(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        json: Any = None,
        body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        delay_ms: float | None = None,
        jitter_ms: float | None = None,
        p99_ms: float | None = None,
        error_rate: float | None = None,
        handler: str | None = None,
    ) -> None:
        """Answer `method path` (a template: `{name}` matches one segment) with a real answer.

        `json` (its strings get the path parameters substituted) or `body`, or
        `handler`, an import string of a function run in the stub's process
        that takes a `StubRequest` and returns a JSON-able value or a
        `StubResponse`. Settings left None follow the upstream's behaviour.
        Reset after each test; a bad route raises ValueError here, in one line.
        """
        __tracebackhide__ = True
        spec: dict[str, Any] = {"method": method, "path": path}
        values = dict(
            status=status,
            json=json,
            body=body,
            headers=dict(headers or {}),
            delay_ms=delay_ms,
            jitter_ms=jitter_ms,
            p99_ms=p99_ms,
            error_rate=error_rate,
            handler=handler,
        )
        if isinstance(body, bytes):
            values["body"] = body.decode("utf-8")
        spec.update({k: v for k, v in values.items() if v is not None})
        what = f"route {method} {path}"
        try:
            content = strict_json_dumps(spec)
        except ValueError as exc:
            raise RouteError(f"upstream {self.upstream_name!r}: {what}: json {exc}") from None
        response = self.control.post(CONTROL_PREFIX + "routes", content=content)
        if response.status_code in (413, 422):
            raise RouteError(
                f"upstream {self.upstream_name!r} refused {what}: {response.json()['detail']}"
            )
        response.raise_for_status()

    def clear_routes(self) -> None:
        self.control.delete(CONTROL_PREFIX + "routes").raise_for_status()

    # ---- recorded requests ---------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """The requests this upstream saw (the last record_requests), in arrival order.

        `path` may be a template (`/stock/{sku}`)."""
        params = {"method": method} if method else {}
        if path is not None and "{" not in path:
            params["path"] = path
        response = self.control.get(CONTROL_PREFIX + "requests", params=params)
        records = [
            RecordedRequest.from_wire(r) for r in response.raise_for_status().json()["requests"]
        ]
        if path is not None and "{" in path:
            regex, _ = compile_template(path)
            assert regex is not None
            records = [r for r in records if regex.match(r.path)]
        return records

    def clear_requests(self) -> None:
        self.control.delete(CONTROL_PREFIX + "requests").raise_for_status()

    def assert_called(
        self, method: str, path: str, times: int | None = None
    ) -> list[RecordedRequest]:
        """`method path` (a template is fine) was called `times` times (at least once when
        None); returns those requests. The message says what came instead."""
        __tracebackhide__ = True
        matching = self.requests(method, path)
        if (times is None and matching) or (times is not None and len(matching) == times):
            return matching
        expected = "at least once" if times is None else f"{times} time(s)"
        seen = Counter(f"{r.method} {r.path}" for r in self.requests())
        came = ", ".join(f"{k} x{v}" for k, v in seen.most_common(8)) or "no request at all"
        if len(seen) > 8:
            came += f", and {len(seen) - 8} other(s)"
        raise UpstreamCallError(
            f"expected {method.upper()} {path} {expected} at upstream "
            f"{self.upstream_name!r}, it came {len(matching)} time(s); the upstream saw: {came}"
        )


def _kwargs(changes: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in changes.items())


class AppServer(ServerProcess):
    """The app under test, wrapped in the loop probe, pointed at its upstreams."""

    def __init__(
        self,
        app: str = DEFAULT_APP,
        *,
        upstream_url: str | None = None,
        env: Mapping[str, str] | None = None,
        app_dir: str | os.PathLike[str] | None = None,
        factory: bool = False,
        host: str = LOOPBACK,
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        base = {DEFAULT_UPSTREAM_ENV: upstream_url} if upstream_url else {}
        super().__init__(
            app,
            name="app",
            env={**base, **(env or {})},
            app_dir=app_dir,
            factory=factory,
            probe=True,
            host=host,
            port=port,
            ready_path=PROBE_PATH,
            startup_timeout=startup_timeout,
        )

    def probe_stats(self) -> dict[str, float]:
        """requests, inflight, peak_inflight, loop_lag_max_s, stalls, ticks, cpu_s."""
        return self.control.get(PROBE_PATH).raise_for_status().json()

    def probe_reset(self) -> dict[str, float]:
        return self.control.post(PROBE_PATH).raise_for_status().json()


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SHELL_VARIABLE = re.compile(r"\$(\{?[A-Za-z_][A-Za-z0-9_]*\}?)")
#: Names an upstream may have (also what the ini's `fanout_upstreams` lines accept).
UPSTREAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def expand_placeholders(value: str, urls: Mapping[str, str]) -> str:
    """`value` with `{upstream_url:NAME}` (and `{upstream_url}`, the first upstream)
    replaced by that upstream's URL. A `$VAR`, an unknown placeholder or name is a
    ValueError in one line: nothing here is a shell, and a literal `$...` would only
    surface as a 500 at measure time."""
    shell = _SHELL_VARIABLE.search(value)
    if shell:
        raise ValueError(
            f"${shell[1]} is not expanded (no shell variables here); "
            "write {upstream_url:NAME} for an upstream's URL"
        )

    def replace(match: re.Match[str]) -> str:
        key, _, name = match[1].partition(":")
        if key != "upstream_url":
            raise ValueError(
                f"unknown placeholder {match[0]}: the only one is {{upstream_url:NAME}}"
            )
        if not name:
            return next(iter(urls.values()))
        if name not in urls:
            raise ValueError(
                f"{match[0]}: no upstream named {name!r} (the upstreams: {', '.join(urls)})"
            )
        return urls[name]

    return _PLACEHOLDER.sub(replace, value)


def start_upstreams(servers: Mapping[str, StubUpstreamServer]) -> None:
    """Start every stub at once (each start is mostly waiting for a child to import);
    if one fails, stop them all and raise its error."""
    if len(servers) == 1:
        next(iter(servers.values())).start()
        return
    for server in servers.values():
        # From this (main) thread: the first registration installs the SIGTERM handler,
        # which only the main thread can do.
        cleanup.register(server)
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        futures = [pool.submit(server.start) for server in servers.values()]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for server in servers.values():
            server.stop()
        raise errors[0]  # type: ignore[misc]


class Stack:
    """Stub upstreams + the app, started together, stopped together (app first).

    `upstreams` maps each upstream's name to the environment variable the app
    reads its URL from; without it, one upstream in `FANOUT_UPSTREAM_URL`.
    """

    def __init__(
        self,
        app: str = DEFAULT_APP,
        *,
        upstreams: Mapping[str, str] | None = None,
        behaviour: Behaviour | None = None,
        behaviours: Mapping[str, Behaviour] | None = None,
        app_env: Mapping[str, str] | None = None,
        app_dir: str | os.PathLike[str] | None = None,
        factory: bool = False,
        host: str = LOOPBACK,
        app_port: int = 0,
        upstream_port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.env_names: dict[str, str] = dict(upstreams or {DEFAULT_UPSTREAM: DEFAULT_UPSTREAM_ENV})
        if not self.env_names:
            raise ValueError("a stack needs at least one upstream")
        behaviours = behaviours or {}
        self.upstreams: dict[str, StubUpstreamServer] = {
            name: StubUpstreamServer(
                behaviours.get(name, behaviour),
                name=name,
                host=host,
                port=upstream_port if index == 0 else 0,
                startup_timeout=startup_timeout,
                app_dir=app_dir,
            )
            for index, name in enumerate(self.env_names)
        }
        self._app_args: dict[str, Any] = dict(
            app=app,
            env=app_env,
            app_dir=app_dir,
            factory=factory,
            host=host,
            port=app_port,
            startup_timeout=startup_timeout,
        )
        self.app: AppServer | None = None

    @property
    def upstream(self) -> StubUpstreamServer:
        """The first (or only) upstream."""
        return next(iter(self.upstreams.values()))

    def upstream_env(self) -> dict[str, str]:
        """Each upstream's URL under the variable the app reads it from."""
        return {self.env_names[name]: server.url for name, server in self.upstreams.items()}

    def start(self) -> Stack:
        try:
            start_upstreams(self.upstreams)
            args = dict(self._app_args)
            urls = {name: server.url for name, server in self.upstreams.items()}
            given = {k: expand_placeholders(v, urls) for k, v in (args["env"] or {}).items()}
            args["env"] = {**self.upstream_env(), **given}
            self.app = AppServer(**args)
            self.app.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
        for server in self.upstreams.values():
            server.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
