"""The stack under test: the stub upstream and the app, each in its own process.

`StubUpstreamServer` and `AppServer` add their control endpoints to a
`ServerProcess`; `Stack` starts both with `FANOUT_UPSTREAM_URL` pointing one
at the other. The plugin's fixtures, `fanout serve`, `fanout patterns` and
the locustfiles all run this same stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from types import TracebackType
from typing import Any

from pytest_fanout.servers.probe import PROBE_PATH
from pytest_fanout.servers.process import LOOPBACK, ServerProcess
from pytest_fanout.servers.upstream import CONTROL_PREFIX, Behaviour

#: The reference app, as installed from the wheel and (editable) in the repository,
#: where app/ is mapped onto this name (pyproject.toml); `uvicorn app.main:app` from
#: the repository root serves the same code.
DEFAULT_APP = "pytest_fanout.reference_app.main:app"


class StubUpstreamServer(ServerProcess):
    """The stub upstream in a child process, with its gauge and behaviour one call away."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.initial = behaviour or Behaviour()
        super().__init__(
            "pytest_fanout.servers.upstream:app_from_env",
            name="upstream",
            env=self.initial.to_env(),
            factory=True,
            host=host,
            port=port,
            ready_path=CONTROL_PREFIX + "stats",
            startup_timeout=startup_timeout,
        )

    def stats(self) -> dict[str, int]:
        """requests, inflight, peak_inflight, completed, errors, rejected, dropped."""
        return self.control.get(CONTROL_PREFIX + "stats").raise_for_status().json()

    def reset(self) -> dict[str, int]:
        """Zero the gauge (peak starts again from what is in flight now)."""
        return self.control.post(CONTROL_PREFIX + "reset").raise_for_status().json()

    def behaviour(self) -> Behaviour:
        return Behaviour(**self.control.get(CONTROL_PREFIX + "config").raise_for_status().json())

    def configure(self, **changes: Any) -> Behaviour:
        """Change delay_ms, jitter_ms, error_rate, error_status, drop_rate or max_inflight."""
        response = self.control.post(CONTROL_PREFIX + "config", json=changes)
        if response.status_code == 422:
            raise ValueError(f"stub upstream refused {changes}: {response.json()['detail']}")
        return Behaviour(**response.raise_for_status().json())

    def restore(self) -> Behaviour:
        """Back to the behaviour it started with."""
        return self.configure(**asdict(self.initial))


class AppServer(ServerProcess):
    """The app under test, wrapped in the loop probe, pointed at an upstream."""

    def __init__(
        self,
        app: str = DEFAULT_APP,
        *,
        upstream_url: str,
        env: Mapping[str, str] | None = None,
        app_dir: str | os.PathLike[str] | None = None,
        factory: bool = False,
        host: str = LOOPBACK,
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            app,
            name="app",
            env={"FANOUT_UPSTREAM_URL": upstream_url, **(env or {})},
            app_dir=app_dir,
            factory=factory,
            probe=True,
            host=host,
            port=port,
            ready_path=PROBE_PATH,
            startup_timeout=startup_timeout,
        )

    def probe_stats(self) -> dict[str, float]:
        """requests, inflight, peak_inflight, loop_lag_max_s, stalls, ticks."""
        return self.control.get(PROBE_PATH).raise_for_status().json()

    def probe_reset(self) -> dict[str, float]:
        return self.control.post(PROBE_PATH).raise_for_status().json()


class Stack:
    """Stub upstream + app, started together, stopped together (app first)."""

    def __init__(
        self,
        app: str = DEFAULT_APP,
        *,
        behaviour: Behaviour | None = None,
        app_env: Mapping[str, str] | None = None,
        app_dir: str | os.PathLike[str] | None = None,
        factory: bool = False,
        host: str = LOOPBACK,
        app_port: int = 0,
        upstream_port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.upstream = StubUpstreamServer(
            behaviour, host=host, port=upstream_port, startup_timeout=startup_timeout
        )
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

    def start(self) -> Stack:
        self.upstream.start()
        try:
            self.app = AppServer(upstream_url=self.upstream.url, **self._app_args)
            self.app.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
        self.upstream.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
