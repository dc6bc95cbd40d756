"""The stack under test: stub upstreams and the app, each in its own process.

`StubUpstreamServer` (in `stub_server.py`) and `AppServer` add their control
endpoints to a `ServerProcess`; `Stack` starts one stub per named upstream (in parallel),
then the app with each stub's URL in the environment variable it names
(`FANOUT_UPSTREAM_URL` for the single default upstream). The plugin's
fixtures, `fanout serve`, `fanout patterns` and the locustfiles all run this
same stack.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from pytest_fanout.servers import cleanup
from pytest_fanout.servers.probe import PROBE_PATH, PROBE_TOKEN_ENV
from pytest_fanout.servers.process import LOOPBACK, ServerProcess
from pytest_fanout.servers.stub_server import (
    RecordedRequest,
    StubUpstreamServer,
    UpstreamCallError,
)
from pytest_fanout.servers.upstream import Behaviour
from pytest_fanout.spec import (
    DEFAULT_APP,
    DEFAULT_UPSTREAM,
    DEFAULT_UPSTREAM_ENV,
    expand_placeholders,
)

__all__ = [
    "DEFAULT_APP",
    "DEFAULT_UPSTREAM",
    "DEFAULT_UPSTREAM_ENV",
    "AppServer",
    "RecordedRequest",
    "Stack",
    "StubUpstreamServer",
    "UpstreamCallError",
    "StubsStarting",
    "expand_placeholders",
    "start_upstreams",
]


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
            # The probe path's token: random for each server, never in `env` (so never in a
            # saved run's context), handed to the child alone (child_env).
            token=secrets.token_urlsafe(24),
        )

    def child_env(self) -> dict[str, str]:
        return {**super().child_env(), PROBE_TOKEN_ENV: self.token or ""}

    def probe_stats(self) -> dict[str, float]:
        """requests, inflight, peak_inflight, loop_lag_max_s, stalls, ticks, cpu_s."""
        return self.control.get(PROBE_PATH).raise_for_status().json()

    def probe_reset(self) -> dict[str, float]:
        return self.control.post(PROBE_PATH).raise_for_status().json()


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
        self._pool = ThreadPoolExecutor(max_workers=len(self.servers))
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


class Stack:
    """Stub upstreams + the app, started together, stopped together (app first).

    `upstreams` maps each upstream's name to the environment variable the app
    reads its URL from; without it, one upstream in `FANOUT_UPSTREAM_URL`.
    `routes` gives some of them routes they start with (and are restored to).
    A `StackSpec` (`pytest_fanout.spec`) builds one with `spec.stack()`.
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
                routes=list((routes or {}).get(name, [])),
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
        """Start the stubs in parallel and the app as soon as their URLs are known (it
        does not need them to answer to start), then wait for all of them."""
        starting = StubsStarting(self.upstreams)
        try:
            starting.wait_bound()
            if starting.failed() is None:
                args = dict(self._app_args)
                urls = {name: server.url for name, server in self.upstreams.items()}
                given = {k: expand_placeholders(v, urls) for k, v in (args["env"] or {}).items()}
                args["env"] = {**self.upstream_env(), **given}
                self.app = AppServer(**args)
                self.app.start()
            failed = starting.wait_ready()
            if failed is not None:
                raise failed
        except BaseException:
            starting.stop()
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
