"""The harness's side of one stub upstream: a child process and its control API in calls.

`StubUpstreamServer` runs `pytest_fanout.servers.upstream` in a child process
(with connection counting and a random control token) and turns the control
paths into methods: gauge (`stats`, `reset`), behaviour (`configure`,
`restore`), routes (`route`) and recorded requests (`requests`,
`assert_called`).
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, TypeVar

import httpx2

from pytest_fanout.limits import DEFAULT_UPSTREAM, Behaviour, strict_json_dumps
from pytest_fanout.servers.held import HeldWaves, hold_settings, holding
from pytest_fanout.servers.process import (
    LOOPBACK,
    ServerProcess,
    ServerStartError,
    stop_on_failure,
)
from pytest_fanout.servers.routes import RawBody, RouteError, compile_template
from pytest_fanout.servers.upstream import CONTROL_PREFIX, TOKEN_ENV

_T = TypeVar("_T")

#: Seconds an idle connection to a stub stays open (nginx's default keepalive_timeout).
STUB_KEEP_ALIVE_S = 75


class UpstreamCallError(AssertionError):
    """`assert_called` did not hold."""


@dataclass
class CallCount:
    """What `upstream.calls()` returns: exact counts from the stub's counter."""

    #: Calls that matched the method and path asked for.
    matching: int
    #: Every call since the recordings were last cleared.
    total: int
    #: Calls past the counter's bounds: when not 0, `matching` is a lower bound.
    uncounted: int
    #: Distinct (method, path) keys counted, and the most called of them.
    keys: int
    top: list[tuple[str, int]]
    #: Requests the recorder keeps now (a sample when less than `total`).
    kept: int

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> CallCount:
        return _from_wire(cls, data, top=[(key, n) for key, n in data["top"]])


@dataclass
class RecordedRequest(RawBody):
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
    #: Some headers were dropped: the record keeps the first 64 KiB of them.
    headers_truncated: bool = False
    #: The client went away before the body ended: no answer was sent.
    aborted: bool = False

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RecordedRequest:
        return _from_wire(
            cls,
            data,
            headers={k.lower(): v for k, v in data["headers"]},
            body=base64.b64decode(data["body_b64"]),
        )


def _from_wire(cls: type[_T], data: Mapping[str, Any], **converted: Any) -> _T:
    """A dataclass from the stub's JSON: each field under its own name (one with a default
    may be missing), `converted` for those the wire carries in another shape."""
    values = {
        f.name: data[f.name]
        for f in fields(cls)
        if f.name not in converted and (f.name in data or f.default is MISSING)
    }
    return cls(**values, **converted)


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
        routes: list[Mapping[str, Any]] | None = None,
    ) -> None:
        self.initial = behaviour or Behaviour()
        #: Routes it starts with and is restored to (`route(...)` keyword arguments; a
        #: "where" key says where they were declared, for the error message).
        self.initial_routes = [dict(r) for r in routes or []]
        self.initial.validate()
        self.upstream_name = name
        #: Set once start() has bound the socket (the URL is final, the child may not answer yet).
        self.bound = threading.Event()
        token = token or secrets.token_urlsafe(24)  # random for each server unless given
        server_name = "upstream" if name == DEFAULT_UPSTREAM else f"upstream-{name}"
        super().__init__(
            "pytest_fanout.servers.upstream:app_from_env",
            name=server_name,
            env={**self.initial.to_env(), TOKEN_ENV: token},
            factory=True,
            host=host,
            port=port,
            app_dir=app_dir,
            ready_path=CONTROL_PREFIX + "stats",
            startup_timeout=startup_timeout,
            token=token,
        )

    @property
    def label(self) -> str:
        return f"upstream {self.upstream_name!r}"

    def build_command(self, fd: int) -> list[str]:
        # Called by start() once the socket is bound: the URL is known from here on.
        self.bound.set()
        # The stub's own HTTP server (servers/stubhttp.py: httptools under uvloop, connections
        # counted), not uvicorn's per-request ASGI layers: the stub is never the bottleneck.
        return [
            *super().build_command(fd),
            "--stub-server",
            # Idle connections stay open as long as at a usual upstream behind a proxy, not
            # uvicorn's 5 s: a slow app (a loaded runner) must not meet a keep-alive race
            # the harness made.
            "--timeout-keep-alive",
            str(STUB_KEEP_ALIVE_S),
        ]

    def start(self) -> StubUpstreamServer:
        """Start the child, then add its declared routes (a bad one: one ServerStartError)."""
        super().start()
        with stop_on_failure(self.stop):
            self._install_routes()
        return self

    def _install_routes(self) -> None:
        for declared in self.initial_routes:
            kwargs = dict(declared)
            where = kwargs.pop("where", f"upstream {self.upstream_name!r}")
            try:
                self.route(**kwargs)
            except (RouteError, TypeError) as exc:
                raise ServerStartError(f"{where}: {exc}") from None

    def _checked(self, response: httpx2.Response, what: str) -> Any:
        if response.status_code in (413, 422):
            raise ValueError(
                f"upstream {self.upstream_name!r} refused {what}: {response.json()['detail']}"
            )
        return response.raise_for_status().json()

    # ---- gauge and behaviour --------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """requests, inflight, peak_inflight, completed, errors, rejected (of them: limited
        by a rate limit, capped by max_inflight), dropped, connections (first used since the
        reset), inflight_now (all calls in flight)."""
        return self.control.get(CONTROL_PREFIX + "stats").raise_for_status().json()

    def reset(self, wait_idle_s: float = 0.0) -> dict[str, int]:
        """Zero the gauge. With `wait_idle_s`, first wait (at most that long) until no call
        is in flight; the answer says how many were (`in_flight_before`) and `idle`."""
        params = {"wait_idle_s": wait_idle_s} if wait_idle_s else None
        timeout = httpx2.Timeout(10 + wait_idle_s)
        response = self.control.post(CONTROL_PREFIX + "reset", params=params, timeout=timeout)
        return response.raise_for_status().json()

    def late(
        self, since: float, after: float, *, grace_s: float = 0.0, wait_idle_s: float = 0.0
    ) -> dict[str, Any]:
        """Calls that arrived from `since` on (time.monotonic()) and ran past `after` +
        `grace_s` (still in flight then, or begun after it), counted once no call is in
        flight (waited for at most `wait_idle_s`): {late, cut, in_flight_before, idle}."""
        params = {"since": since, "after": after, "grace_s": grace_s, "wait_idle_s": wait_idle_s}
        timeout = httpx2.Timeout(10 + wait_idle_s)
        response = self.control.get(CONTROL_PREFIX + "late", params=params, timeout=timeout)
        return response.raise_for_status().json()

    def release_hung(self) -> int:
        """Answer every call a hung route or upstream holds now with 504 (the harness gave
        up on the request that waits for them); returns how many."""
        return self.control.delete(CONTROL_PREFIX + "hung").raise_for_status().json()["released"]

    def behaviour(self) -> Behaviour:
        return Behaviour(**self.control.get(CONTROL_PREFIX + "config").raise_for_status().json())

    def configure(self, **changes: Any) -> Behaviour:
        """Change delay_ms, jitter_ms, p99_ms, error_rate, error_status, drop_rate,
        max_inflight, rate_limit ("50/s"), burst, record_requests, record_body_bytes or
        seed."""
        __tracebackhide__ = True
        try:
            body = strict_json_dumps(changes)
        except ValueError as exc:
            raise ValueError(f"upstream {self.upstream_name!r}: {exc}") from None
        response = self.control.post(CONTROL_PREFIX + "config", content=body)
        return Behaviour(**self._checked(response, f"configure({_kwargs(changes)})"))

    def restore(self) -> Behaviour:
        """Back to the behaviour and routes it started with; no recorded requests."""
        response = self.control.post(CONTROL_PREFIX + "restore", json=asdict(self.initial))
        behaviour = Behaviour(**self._checked(response, "restore()"))
        self._install_routes()
        return behaviour

    # ---- hold mode (servers/hold.py) -------------------------------------------------------

    @contextmanager
    def hold(
        self,
        *,
        count: int | None = None,
        quiet_min_ms: float | None = None,
        quiet_max_ms: float | None = None,
        max_calls: int | None = None,
        max_wave_s: float | None = None,
        app_pid: int | None = None,
    ) -> Iterator[HeldWaves]:
        """Hold calls inside the block and release them in waves: the concurrency the
        client's code allows, exact on any machine. `with up.hold() as held: ...`, then
        `held.waves` (`[10]`, `[1, 1, 1]`), `held.peak`. A wave is complete when no call came
        for the quiet window (and the app at `app_pid` is idle), or at `count` calls; past
        `max_calls` or `max_wave_s` the hold ends and HoldBoundError says which bound."""
        __tracebackhide__ = True
        settings = hold_settings(
            count=count,
            quiet_min_ms=quiet_min_ms,
            quiet_max_ms=quiet_max_ms,
            max_calls=max_calls,
            max_wave_s=max_wave_s,
            app_pid=app_pid,
        )
        with holding(self, settings) as held:
            yield held

    def arm_hold(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Start holding calls (the control call under `hold()`); bad settings: ValueError."""
        response = self.control.post(CONTROL_PREFIX + "hold", content=strict_json_dumps(settings))
        return self._checked(response, "hold()")

    def disarm_hold(self) -> dict[str, Any]:
        """Stop holding; calls still held are answered. The report: waves, error."""
        return self.control.delete(CONTROL_PREFIX + "hold").raise_for_status().json()

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
        events: Sequence[Any] | None = None,
        chunks: Sequence[str | bytes] | None = None,
        chunk_delay_ms: float | None = None,
        tokens_per_s: float | None = None,
        hang: bool | None = None,
        rate_limit: str | None = None,
        burst: int | None = None,
    ) -> None:
        """Answer `method path` (a template: `{name}` matches one segment) with a real answer.

        `json` (its strings get the path parameters substituted) or `body`, or
        `handler`, an import string of a function run in the stub's process
        that takes a `StubRequest` and returns a JSON-able value, a
        `StubResponse` or a `StubStream`. `events` (server-sent events) or
        `chunks` stream the answer: the first after `delay_ms`, then one every
        `chunk_delay_ms` or at `tokens_per_s`. `hang=True` never answers: the call is held
        until its client goes away (a hung upstream). `rate_limit` ("5/s", "300/min") and
        `burst` limit this route's calls (past them: 429 at once, with Retry-After), over
        the upstream's own limit. Settings left None follow the
        upstream's behaviour.
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
            events=list(events) if events is not None else None,
            chunks=[c.decode() if isinstance(c, bytes) else c for c in chunks]
            if chunks is not None
            else None,
            chunk_delay_ms=chunk_delay_ms,
            tokens_per_s=tokens_per_s,
            hang=hang,
            rate_limit=rate_limit,
            burst=burst,
        )
        if isinstance(body, bytes):  # any bytes, not only UTF-8: sent as base64
            values["body"] = None
            values["body_b64"] = base64.b64encode(body).decode()
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

    # ---- recorded requests ---------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """The requests this upstream kept, in arrival order: a sample, the last
        record_requests within record_total_bytes. Count calls with `calls()`.

        `path` may be a template (`/stock/{sku}`). Read in pages of at most 4 MiB."""
        __tracebackhide__ = True
        params: dict[str, Any] = {"method": method} if method else {}
        if path is not None:
            compile_template(path)  # a bad template is one line here
            params["path"] = path
        records: list[RecordedRequest] = []
        response = self.control.get(CONTROL_PREFIX + "requests", params=params)
        page = self._checked(response, "requests()")
        params["upto"] = page["seen"]  # what came later is not this read's
        # Bounded: each page holds at least one kept record past `after`, and no more than
        # `kept` of them come up to `upto`.
        for _ in range(page["kept"] + 1):
            records.extend(RecordedRequest.from_wire(r) for r in page["requests"])
            if page["next"] is None:
                break
            params["after"] = page["next"]
            response = self.control.get(CONTROL_PREFIX + "requests", params=params)
            page = self._checked(response, "requests()")
        return records

    def call_log(self, since: float, until: float) -> list[dict[str, Any]]:
        """The calls that arrived in [since, until] (time.monotonic(), one clock for every
        process), in arrival order: arrival_s, answered_s, method, path, route, ... (the
        stub's call log, `servers/calllog.py`)."""
        params = {"since": since, "until": until}
        response = self.control.get(CONTROL_PREFIX + "timeline", params=params)
        return list(response.raise_for_status().json()["calls"])

    def calls(self, method: str | None = None, path: str | None = None) -> CallCount:
        """How many calls of `method path` (a template is fine; None: any) this upstream
        got since the last reset of its recordings: exact, from the stub's own counter."""
        params: dict[str, Any] = {"method": method} if method else {}
        if path is not None:
            params["path"] = path
        response = self.control.get(CONTROL_PREFIX + "calls", params=params)
        return CallCount.from_wire(self._checked(response, "calls()"))

    def assert_called(
        self, method: str, path: str, times: int | None = None
    ) -> list[RecordedRequest]:
        """`method path` (a template is fine) was called `times` times (at least once when
        None), judged from the stub's exact count of every call; returns the kept requests
        of those calls (a sample when the recorder's bounds dropped some). The message
        says what came instead."""
        __tracebackhide__ = True
        counted = self.calls(method, path)
        came_times = counted.matching
        exact = counted.uncounted == 0
        if exact and ((times is None and came_times) or came_times == times):
            return self.requests(method, path)
        if not exact and times is None and came_times:
            return self.requests(method, path)  # at least once holds on a lower bound
        expected = "at least once" if times is None else f"{times} time(s)"
        came = ", ".join(f"{k} x{v}" for k, v in counted.top) or "no request at all"
        if counted.keys > len(counted.top):
            came += f", and {counted.keys - len(counted.top)} other(s)"
        how = f"{came_times} time(s)"
        if not exact:
            how = (
                f"at least {came_times} time(s) ({counted.uncounted} call(s) went to paths past "
                "the stub's table of distinct paths, so the exact count is unknown)"
            )
        sample = ""
        if counted.kept < counted.total:
            sample = (
                f" (counted by the stub; its recorded requests are a sample of {counted.kept} "
                f"of {counted.total})"
            )
        raise UpstreamCallError(
            f"expected {method.upper()} {path} {expected} at upstream "
            f"{self.upstream_name!r}, it came {how}; the upstream saw: {came}{sample}"
        )


def _kwargs(changes: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in changes.items())
