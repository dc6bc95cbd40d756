"""The stack under test: stub upstreams and the app, each in its own process, built in ONE place.

`StubUpstreamServer` (in `stub_server.py`) and `AppServer` add their control
endpoints to a `ServerProcess`; `Stack.from_spec(spec)` is the one builder: it
starts one stub per named upstream (in parallel, in bounded batches), then the
app with each stub's URL in the environment variable the spec names for it
(`FANOUT_UPSTREAM_URL` for the single default upstream). The pytest fixtures
(which start the two phases apart: a test that only needs the stubs starts no
app), every `fanout` command, Locust, capacity, the critical path and the
gate's A/B run go through it; `AppServer.twin` starts the same app from
another checkout (the A/B base).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from pytest_fanout.limits import (
    DEFAULT_APP,
    DEFAULT_STARTUP_TIMEOUT_S,
    DEFAULT_UPSTREAM,
    DEFAULT_UPSTREAM_ENV,
    Behaviour,
)
from pytest_fanout.servers import cleanup
from pytest_fanout.servers.probe import PROBE_PATH, PROBE_TOKEN_ENV
from pytest_fanout.servers.process import LOOPBACK, ServerProcess, Started, stop_on_failure
from pytest_fanout.servers.stub_server import (
    RecordedRequest,
    StubUpstreamServer,
    UpstreamCallError,
)
from pytest_fanout.spec import StackSpec, UpstreamSpec

__all__ = [
    "AppServer",
    "RecordedRequest",
    "Stack",
    "StubUpstreamServer",
    "UpstreamCallError",
    "StubsStarting",
    "start_upstreams",
]

#: Stubs started at once: each start is mostly a child importing, so a few in parallel
#: hide most of the wait, and 60 upstreams do not start 60 imports at once.
START_BATCH = 8


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
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
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
            # The probe path's token: random for each server, never in `env` (so never in a
            # saved run's context), handed to the child alone (child_env).
            token=secrets.token_urlsafe(24),
        )

    @property
    def label(self) -> str:
        return "the app process" if self.name == "app" else self.name

    def child_env(self) -> dict[str, str]:
        return {**super().child_env(), PROBE_TOKEN_ENV: self.token or ""}

    def probe_stats(self) -> dict[str, float]:
        """requests, inflight, peak_inflight, loop_lag_max_s, stalls, ticks, cpu_s."""
        return self.control.get(PROBE_PATH).raise_for_status().json()

    def probe_reset(self) -> dict[str, float]:
        return self.control.post(PROBE_PATH).raise_for_status().json()

    def probe_price(self) -> dict[str, float]:
        """`probe_stats()` once the probe has priced its tick afresh (a moment of idle loop,
        at most `probe.PRICE_WAIT_S`): its ticks are then taken off the app's CPU."""
        return self.control.get(PROBE_PATH, params={"price": "1"}).raise_for_status().json()

    def twin(
        self,
        *,
        app_dir: str | os.PathLike[str] | None,
        cwd: str | os.PathLike[str] | None,
        name: str,
    ) -> AppServer:
        """The same app (import string, environment with every upstream URL, timeout, log
        level), imported from another directory: the gate's A/B base, from its worktree."""
        twin = AppServer(
            self.app,
            env=self.env,
            app_dir=app_dir,
            factory=self.factory,
            host=self.host,
            startup_timeout=self.startup_timeout,
        )
        twin.cwd = str(cwd) if cwd is not None else None
        twin.log_level = self.log_level
        twin.name = name
        return twin


class StubsStarting:
    """Stub processes starting in the background, all at once (each start is mostly a child
    importing): the app can start as soon as their sockets are bound, since their URLs are
    final then, and need not wait for them to answer."""

    def __init__(self, servers: Mapping[str, StubUpstreamServer]) -> None:
        self.servers = dict(servers)
        for server in self.servers.values():
            # From this (main) thread: the first registration installs the SIGTERM handler,
            # which only the main thread can do.
            cleanup.register(server)
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(START_BATCH, len(self.servers))))
        self._futures = [self._pool.submit(server.start) for server in self.servers.values()]

    def wait_bound(self) -> None:
        """Until every stub's socket is bound (its URL final), or its start has failed."""
        for server, future in zip(self.servers.values(), self._futures, strict=True):
            while not server.bound.wait(0.05) and not future.done():
                pass  # bounded: start() binds first thing, or fails and is done

    def failed(self) -> BaseException | None:
        """The first start that failed so far, if any (without waiting)."""
        for future in self._futures:
            if future.done() and future.exception() is not None:
                return future.exception()
        return None

    def wait_ready(self) -> BaseException | None:
        """Until every stub answers; the first start that failed, or None."""
        self._pool.shutdown(wait=True)
        return self.failed()

    def stop(self) -> None:
        """Stop every stub (after waiting for any still starting: none may be left)."""
        self._pool.shutdown(wait=True)
        for server in self.servers.values():
            server.stop()


def start_upstreams(servers: Mapping[str, StubUpstreamServer]) -> None:
    """Start every stub at once; if one fails, stop them all and raise its error."""
    starting = StubsStarting(servers)
    failed = starting.wait_ready()
    if failed is not None:
        starting.stop()
        raise failed


class Stack(Started):
    """Stub upstreams + the app, started together (stubs first, the app as soon as their URLs
    are known), stopped together (app first).

    `Stack.from_spec(spec)` builds one from a `StackSpec` (what `[tool.fanout]`, the ini and
    the flags declare); the keyword form is the same thing for a library user: `upstreams`
    maps each upstream's name to the environment variable the app reads its URL from
    (without it, one upstream in `FANOUT_UPSTREAM_URL`), `behaviour`/`behaviours` set how
    they answer and `routes` gives some of them routes they start with (and are restored
    to). `on_server` sees every server before it starts (the plugin's setup hook).
    """

    def __init__(
        self,
        app: str = DEFAULT_APP,
        *,
        upstreams: Mapping[str, str] | None = None,
        behaviour: Behaviour | None = None,
        behaviours: Mapping[str, Behaviour] | None = None,
        routes: Mapping[str, list[Mapping[str, Any]]] | None = None,
        app_env: Mapping[str, str] | None = None,
        app_dir: str | os.PathLike[str] | None = None,
        factory: bool = False,
        host: str = LOOPBACK,
        app_port: int = 0,
        upstream_port: int = 0,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        on_server: Callable[[ServerProcess], None] | None = None,
    ) -> None:
        names = dict(upstreams or {DEFAULT_UPSTREAM: DEFAULT_UPSTREAM_ENV})
        if not names:
            raise ValueError("a stack needs at least one upstream")
        behaviours = behaviours or {}
        spec = StackSpec(
            app=app,
            app_dir=str(app_dir) if app_dir is not None else None,
            app_factory=factory,
            app_env=dict(app_env or {}),
            startup_timeout=startup_timeout,
        )
        for name, env in names.items():
            chosen = behaviours.get(name, behaviour) or Behaviour()
            spec.upstreams[name] = UpstreamSpec(
                name,
                env,
                behaviour=asdict(chosen),
                routes=[dict(route) for route in (routes or {}).get(name, [])],
            )
        self._build(spec, host, app_port, upstream_port, on_server)

    @classmethod
    def from_spec(
        cls,
        spec: StackSpec,
        *,
        host: str = LOOPBACK,
        app_port: int = 0,
        upstream_port: int = 0,
        on_server: Callable[[ServerProcess], None] | None = None,
    ) -> Stack:
        """The stack a spec declares (not started)."""
        stack = cls.__new__(cls)
        stack._build(spec, host, app_port, upstream_port, on_server)
        return stack

    def _build(
        self,
        spec: StackSpec,
        host: str,
        app_port: int,
        upstream_port: int,
        on_server: Callable[[ServerProcess], None] | None,
    ) -> None:
        """The one place a spec becomes servers: a stub per upstream, the app's arguments."""
        self.spec = spec
        #: name -> the app's environment variable for that upstream's URL (the one map).
        self.env_names: dict[str, str] = spec.upstream_env_names()
        self.host = host
        self.app_port = app_port
        self._on_server = on_server
        behaviours, routes = spec.behaviours(), spec.routes()
        self.upstreams: dict[str, StubUpstreamServer] = {
            name: StubUpstreamServer(
                behaviours[name],
                name=name,
                host=host,
                port=upstream_port if index == 0 else 0,
                startup_timeout=spec.startup_timeout,
                app_dir=spec.app_dir,
                routes=list(routes.get(name, [])),
            )
            for index, name in enumerate(self.env_names)
        }
        self.app: AppServer | None = None
        self._starting: StubsStarting | None = None

    @property
    def upstream(self) -> StubUpstreamServer:
        """The first (or only) upstream."""
        return next(iter(self.upstreams.values()))

    def upstream_env(self) -> dict[str, str]:
        """Each upstream's URL under the variable the app reads it from."""
        return {self.env_names[name]: server.url for name, server in self.upstreams.items()}

    def app_env(self) -> dict[str, str]:
        """The app's whole environment: every upstream's URL, then the spec's entries with
        their `{upstream_url:NAME}` placeholders filled in."""
        urls = {name: server.url for name, server in self.upstreams.items()}
        return {**self.upstream_env(), **self.spec.app_environment(urls)}

    # ---- the two phases --------------------------------------------------------------------

    def start_upstreams(self) -> Stack:
        """Start every stub in the background (once); `wait_upstreams` waits for them."""
        if self._starting is None:
            if self._on_server is not None:
                for server in self.upstreams.values():
                    self._on_server(server)
            self._starting = StubsStarting(self.upstreams)
        return self

    def wait_upstreams(self) -> dict[str, StubUpstreamServer]:
        """Until every stub answers; the first failed start is raised (the others go on)."""
        self.start_upstreams()
        assert self._starting is not None
        failed = self._starting.wait_ready()
        if failed is not None:
            raise failed
        return self.upstreams

    def start_app(self) -> AppServer:
        """Start the app as soon as the stubs' URLs are known (it need not wait for them to
        answer), then wait for the stubs too; on failure the app is stopped and the first
        error raised."""
        self.start_upstreams()
        assert self._starting is not None
        self._starting.wait_bound()
        failed = self._starting.failed()
        if failed is not None:
            raise failed
        spec = self.spec
        self.app = AppServer(
            spec.app,
            env=self.app_env(),
            app_dir=spec.app_dir,
            factory=spec.app_factory,
            host=self.host,
            port=self.app_port,
            startup_timeout=spec.startup_timeout,
        )
        if self._on_server is not None:
            self._on_server(self.app)
        with stop_on_failure(self.stop_app):
            self.app.start()
            self.wait_upstreams()
        return self.app

    def start(self) -> Stack:
        """Both phases; anything that fails stops everything started."""
        with stop_on_failure(self.stop):
            self.start_upstreams()
            self.start_app()
        return self

    def stop_app(self) -> None:
        if self.app is not None:
            self.app.stop()

    def stop(self) -> None:
        """The app first, then every stub (after waiting for any still starting)."""
        self.stop_app()
        if self._starting is not None:
            self._starting.stop()  # stops every stub, once each has finished starting
        else:
            for server in self.upstreams.values():
                server.stop()
