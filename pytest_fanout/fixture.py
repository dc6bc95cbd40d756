"""`Fanout`: what a test holds through the `fanout` fixture.

One object over the session's stack: send a request or measure a path (any
method, any body), then assert on the measurement. Every measurement is also
reported to the plugin hook and kept for the terminal summary and the
regression gate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partialmethod
from typing import TYPE_CHECKING, Any

import httpx2

from pytest_fanout import assertions
from pytest_fanout.diagnosis import Finding, diagnose
from pytest_fanout.limits import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_REQUEST_TIMEOUT_S
from pytest_fanout.measure import MeasureClient, measure, send_request
from pytest_fanout.measurement import Measurement, PathShape, Request
from pytest_fanout.servers.held import HeldWaves, hold_all, hold_settings
from pytest_fanout.servers.stack import AppServer, StubUpstreamServer

if TYPE_CHECKING:
    from pytest_fanout.timeline import CriticalPath, TimelineFinding, Waterfall


class Fanout:
    """The facade of the `fanout` fixture."""

    def __init__(
        self,
        server: AppServer,
        upstreams: Mapping[str, StubUpstreamServer] | StubUpstreamServer,
        *,
        test: str = "",
        on_measurement: Callable[[Measurement], None] | None = None,
        timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        shape: PathShape | None = None,
        sampler: Callable[..., Measurement] | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.server = server
        if isinstance(upstreams, StubUpstreamServer):
            upstreams = {upstreams.upstream_name: upstreams}
        #: Every upstream by name, the default (first) one first.
        self.upstreams: dict[str, StubUpstreamServer] = dict(upstreams)
        self.test = test
        self.timeout_s = timeout_s
        self._on_measurement = on_measurement
        self._shape = shape
        self._client = MeasureClient(timeout=timeout_s, max_answer_bytes=max_answer_bytes)
        #: How a measurement is taken: `measure`, or what the `pytest_fanout_sampler` hook
        #: gave (same arguments: the client, the app's URL, one `Request`, then measure's
        #: keywords): the gate's A/B mode alternates this app and the base's.
        self.sampler: Callable[..., Measurement] = sampler or measure

    @property
    def upstream(self) -> StubUpstreamServer:
        """The default (first) upstream."""
        return next(iter(self.upstreams.values()))

    @property
    def url(self) -> str:
        return self.server.url

    def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """One request to the app under test (`json=`, `content=`, `headers=`, `params=`...).

        A dead app, a timeout (a deadline for the whole answer) or a body past
        `max_answer_bytes` is one line (MeasurementError), not a transport traceback."""
        __tracebackhide__ = True
        body = {key: kwargs.pop(key) for key in ("json", "content", "headers") if key in kwargs}
        request = Request(path, method=method, **body)
        return send_request(self._client, self.server, self.server.url, request, **kwargs)

    # One request with its method given: `fanout.post(path, json=...)` is
    # `fanout.request("POST", path, json=...)`, the same call (no frame of its own).
    get = partialmethod(request, "GET")
    """One plain GET to the app under test."""
    post = partialmethod(request, "POST")
    """One POST to the app under test (`json=` or `content=` for its body)."""
    put = partialmethod(request, "PUT")
    """One PUT to the app under test."""
    patch = partialmethod(request, "PATCH")
    """One PATCH to the app under test."""
    delete = partialmethod(request, "DELETE")
    """One DELETE to the app under test."""

    def measure(
        self,
        path: str | None = None,
        repeat: int = 5,
        warmup: int = 1,
        *,
        method: str = "GET",
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        n: int | None = None,
        concurrency: int | None = None,
        ideal_s: float | None = None,
        expect_status: int = 200,
        held_probe: bool = True,
        held_probes: int = 1,
        request: Request | None = None,
        disconnect_after_s: float | None = None,
        disconnect_grace_s: float | None = None,
    ) -> Measurement:
        """Send `method path` `repeat` times after `warmup` untimed calls, with exact gauges
        for every upstream, and (`held_probe`) one more untimed call with the stubs in
        hold mode: its waves are the request's concurrency structure (`m.structure`).

        `n` and `concurrency` give the ideal time (upstream delay x the number
        of waves); without them the `pytest_fanout_path_shape` hook is asked.
        `ideal_s` gives the ideal time outright (a fan-out with several stages).
        `request=Request(...)` is the request already built, in place of `path` and
        its keywords. `disconnect_after_s`: hang up that long after sending each request,
        and count the calls still running `disconnect_grace_s` (0.1 s) later
        (`m.upstream(name).after_disconnect`). `held_probes=3` sends two more held probes
        after the samples (`m.structures`): the gate says "not gated" of a structure that
        varied between them rather than "same" or a regression.
        """
        __tracebackhide__ = True
        request = _one_request(path, request, method, json, content, headers, expect_status)
        # Only when asked: a sampler from the `pytest_fanout_sampler` hook may not take them.
        hang_up: dict[str, float] = {}
        if disconnect_after_s is not None:
            hang_up["disconnect_after_s"] = disconnect_after_s
        if disconnect_grace_s is not None:
            hang_up["disconnect_grace_s"] = disconnect_grace_s
        if held_probes != 1:  # several held probes: the gate sees a structure that varies
            hang_up["held_probes"] = held_probes
        result = self.sampler(
            self._client,
            self.server.url,
            request,
            upstreams=self.upstreams,
            app=self.server,
            repeat=repeat,
            warmup=warmup,
            n=n,
            concurrency=concurrency,
            ideal_s=ideal_s,
            shape=self._shape,
            held_probe=held_probe,
            **hang_up,
        )
        result.test = self.test
        if self._on_measurement is not None:
            self._on_measurement(result)
        return result

    # The assertions are `pytest_fanout.assertions`' own functions (one place each).
    assert_speedup = staticmethod(assertions.assert_speedup)
    """`fast` at least `at_least` times faster than `slow` (medians, same run)."""
    assert_concurrency = staticmethod(assertions.assert_concurrency)
    """Exactly `peak` calls in flight at once at the upstream, at most `at_most`, `requests`
    in all, the held probe's `waves` (the default upstream, or `upstream`). Checked on the
    held probe's waves: exact on any machine."""
    assert_connection_reuse = staticmethod(assertions.assert_connection_reuse)
    """At most `at_most` new TCP connections per sample (all upstreams, or one)."""
    assert_no_blocking = staticmethod(assertions.assert_no_blocking)
    """No event-loop stall longer than `max_lag_s` (default: half the upstream delay)."""
    assert_streams = staticmethod(assertions.assert_streams)
    """The first byte came within `first_byte_within` of the last, in every sample."""

    @contextmanager
    def hold(
        self, *, count: int | None = None, max_calls: int | None = None
    ) -> Iterator[dict[str, HeldWaves]]:
        """Every upstream holds its calls inside the block and answers them in waves once
        the app is idle: `with fanout.hold() as held: fanout.get("/x")`, then
        `held["inventory"].waves`. Past a bound, HoldBoundError says which."""
        __tracebackhide__ = True
        settings = hold_settings(count=count, max_calls=max_calls, app_pid=self.server.pid)
        with hold_all(self.upstreams, settings) as held:
            yield held

    assert_no_orphans = staticmethod(assertions.assert_no_orphans)
    assert_cancels_on_disconnect = staticmethod(assertions.assert_cancels_on_disconnect)
    assert_within_limits = staticmethod(assertions.assert_within_limits)
    """No call to a rate-limited (or max_inflight) upstream was answered 429."""
    assert_backs_off = staticmethod(assertions.assert_backs_off)
    """Every retry of a 429 waited what it asked for; at most `max_retries` per call."""

    def diagnose(self, m: Measurement) -> list[Finding]:
        """What is wrong with `m`'s fan-out, most important first ([] when healthy)."""
        return diagnose(m)

    # ---- where the time goes (pytest_fanout.timeline) -----------------------------------

    def waterfall(self, m: Measurement, sample: int | None = None) -> Waterfall:
        """The upstream calls of one sample of `m` (the median one unless `sample` is an
        index) on a time axis: `str()`, `.mermaid()`, `.save("x.svg")`, `.findings()`."""
        from pytest_fanout.timeline.session import waterfall_of

        waterfall = waterfall_of(m, self.upstreams, sample)
        if sample is None:
            m.timeline = waterfall.to_dict()  # saved with the run: the gate's report shows it
        return waterfall

    def critical_path(
        self,
        path: str | None = None,
        *,
        method: str = "GET",
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        expect_status: int = 200,
        budget_s: float = 20.0,
        extra_ms: float | None = None,
        record: Measurement | None = None,
        request: Request | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> CriticalPath:
        """How many times `method path` pays each upstream's delay (`.weights`) and how
        much slower each off the path may get (`.slack`), found by changing every one a
        little, both ways, in each run; at most `budget_s` seconds. `record=m` keeps the
        weights (and the waterfall) in `m`, so a saved run holds them for the gate.
        `progress=print` shows each target and run as it goes (silent by default: pytest
        captures a test's output, and a passing test's output is not shown)."""
        __tracebackhide__ = True
        from pytest_fanout.timeline.session import run_critical_path

        request = _one_request(path, request, method, json, content, headers, expect_status)
        return run_critical_path(
            self._client,
            self.server,
            self.upstreams,
            request,
            budget_s=budget_s,
            extra_ms=extra_ms,
            record=record,
            progress=progress,
        )

    def timeline_findings(
        self,
        path: str | None = None,
        *,
        method: str = "GET",
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        expect_status: int = 200,
        request: Request | None = None,
    ) -> list[TimelineFinding]:
        """The waterfall's findings for one request of `method path`, each sequential pair
        of calls tested: is the second call's request the same when the first upstream's
        answers change? (Only then "could run together".)"""
        __tracebackhide__ = True
        from pytest_fanout.timeline.session import run_findings

        request = _one_request(path, request, method, json, content, headers, expect_status)
        return run_findings(self._client, self.server, self.upstreams, request)

    def close(self) -> None:
        self._client.close()


def _one_request(
    path: str | None,
    request: Request | None,
    method: str,
    json: Any,
    content: bytes | str | None,
    headers: Mapping[str, str] | None,
    expect_status: int,
) -> Request:
    """The one Request of a `Fanout` call: `request=` as given, or built from the path and
    the keywords a test writes (`method=`, `json=`...); both at once is a TypeError."""
    if request is None:
        if path is None:
            raise TypeError("give the path to measure (or request=Request(...))")
        return Request(path, method, json, content, headers, expect_status)
    given = (json, content, headers) != (None, None, None)
    if path is not None or given or method != "GET" or expect_status != 200:
        raise TypeError("give either request= or the path and its keywords, not both")
    return request
