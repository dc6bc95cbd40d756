"""Measurements of one path of the app under test, and how they are taken.

A `Measurement` holds what is exact (requests the upstream saw, the
request's concurrency structure from the held probe) next to what depends on
the machine (the timed samples: wall time, the peak in flight they reached at
the configured delay, loop lag, CPU), and relates the wall time to the ideal
one: with upstream delay d, n calls and concurrency c, the ideal is
d * ceil(n / c), and efficiency = ideal / median is portable between machines
where raw seconds are not.

The held probe is one extra, untimed request per measurement, sent after the
warm-up with every stub in hold mode (`servers/hold.py`): each stub answers
its calls in waves, once the app has nothing more to send, so the wave sizes
are the concurrency the code allows, whatever the client's speed or the
runner's load.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx2

from pytest_fanout.servers.held import HoldBoundError, hold_all, hold_settings

#: How long the app's own code may hold its event loop before it counts as blocking, whatever
#: the upstream delay: a blocking call to an upstream holds it for the whole delay (50 ms or
#: more at the delays tests use), so the verdict is the same at 50, 100 and 200 ms. Garbage
#: collection and time the loop thread waited for a CPU are not the code's and not counted.
BLOCKING_LIMIT_S = 0.04

#: (n, concurrency) of a path, or None when unknown: what `pytest_fanout_path_shape` returns.
PathShape = Callable[[str], "tuple[int, int] | None"]


def stall_held_s(stall: Mapping[str, Any]) -> float:
    """How long the app's own code held the loop in one stall: its duration less its
    garbage collection, the time the app's threads waited for a CPU, and the stack
    sampler's own time."""
    duration, starved = stall.get("duration_s", 0.0), stall.get("starved_s", 0.0)
    sampler = stall.get("sampler_s", 0.0)  # the probe's own sampling, not the app's code
    return max(0.0, duration - starved - sampler - stall_gc_s(stall))


def stall_gc_s(stall: Mapping[str, Any]) -> float:
    """The garbage collector's own time in a stall: its wall time less its share of the
    time the loop waited for a CPU (taken as spread evenly over the stall)."""
    gc_s, starved = stall.get("gc_s", 0.0), stall.get("starved_s", 0.0)
    ran = stall.get("ran_s")
    if ran is not None and ran + starved > 0:
        return min(ran, gc_s * ran / (ran + starved))
    return gc_s


def ideal_seconds(delay_s: float, n: int, concurrency: int) -> float:
    """The wall time of a perfect fan-out: delay x the number of waves."""
    return delay_s * math.ceil(n / max(1, concurrency))


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Measurement:
    """Repeated timings of one path, with the upstream's and the probe's exact counts."""

    path: str
    samples: list[float]
    #: Requests the upstream saw during each sample (exact).
    upstream_requests_per_sample: list[int] = field(default_factory=list)
    #: Most requests in flight at the upstream during each sample (exact).
    upstream_peak_per_sample: list[int] = field(default_factory=list)
    #: Largest event-loop lag in the app during each sample (seconds).
    loop_lag_per_sample: list[float] = field(default_factory=list)
    #: CPU seconds the app's process spent during each sample (exact, from the probe).
    app_cpu_per_sample: list[float] = field(default_factory=list)
    #: Seconds of garbage collection in the app's process during each sample.
    app_gc_per_sample: list[float] = field(default_factory=list)
    #: Threads the app's process started during each sample, at their most (a fan-out on a
    #: thread pool started per request).
    app_threads_per_sample: list[int] = field(default_factory=list)
    n: int | None = None
    concurrency: int | None = None
    #: The request: method and path (`path` above).
    method: str = "GET"
    #: Per named upstream, per sample (exact): requests, peak, connections, rejected, errors.
    #: The first upstream's requests and peak are also the two lists above.
    upstream_gauges: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    #: An ideal wall time given by the test (a fan-out with several stages), in seconds.
    ideal_given_s: float | None = None
    #: The default upstream's configured delay and jitter while measuring.
    upstream_delay_s: float | None = None
    upstream_jitter_s: float = 0.0
    status_code: int = 200
    #: Untimed calls before the samples (with none, the first sample opens the connections).
    warmup: int = 0
    #: Failed upstream calls the app reported, summed over samples.
    app_errors: int = 0
    #: Who took it: the test's node id, filled in by the plugin.
    test: str = ""
    #: The app's event-loop stalls the probe's stack sampler caught, over all samples,
    #: longest first: {"duration_s", "stacks": [{"count", "frames": [{"file", "line",
    #: "function"}, ...innermost last]}]} (see pytest_fanout.servers.callstacks to read them).
    stalls: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds to the first byte of the answer's body in each sample (the first token of a
    #: stream); `samples` are the times to its last byte.
    first_byte_per_sample: list[float] = field(default_factory=list)
    #: The app streamed its answer (chunked: no length known up front), as an SSE or token
    #: stream does: exact, from the headers. The gate then judges the first byte too.
    streamed: bool = False
    #: When each sample was sent and answered, on time.monotonic() (the stubs' call-log
    #: clock): the upstream calls inside a window are that sample's (the waterfall).
    sample_windows: list[tuple[float, float]] = field(default_factory=list)
    #: The median sample's waterfall (`Waterfall.to_dict()`), once `fanout.waterfall(m)`
    #: drew it: the gate's report shows it for a regressed case.
    timeline: dict[str, Any] | None = None
    #: Causal weights (`CriticalPath.to_dict()`) when the test recorded them
    #: (`fanout.critical_path(..., record=m)`): portable, compared from any machine.
    critical_path: dict[str, Any] | None = None

    @property
    def first_byte_median_s(self) -> float | None:
        """The median time to the first byte of the body (None for a measurement without)."""
        return statistics.median(self.first_byte_per_sample) if self.first_byte_per_sample else None

    @property
    def first_byte_p95_s(self) -> float | None:
        return percentile(self.first_byte_per_sample, 95) if self.first_byte_per_sample else None

    #: The request's concurrency structure, from the held probe (exact on any machine):
    #: upstream name -> wave sizes, e.g. {"inventory": [10], "pricing": [1]}; {} when no
    #: held probe was sent (old data, or `held_probe=False`).
    structure: dict[str, list[int]] = field(default_factory=dict)
    #: Wall time of the held probe (seconds): what the structure cost.
    structure_probe_s: float | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95_s(self) -> float:
        return percentile(self.samples, 95)

    @property
    def min_s(self) -> float:
        return min(self.samples)

    @property
    def max_s(self) -> float:
        return max(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the samples were."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s else 0.0

    @property
    def upstream_requests(self) -> int:
        """Requests the upstream saw for one call of the path (the most in any sample)."""
        return max(self.upstream_requests_per_sample, default=0)

    @property
    def upstream_peak_inflight(self) -> int:
        return max(self.upstream_peak_per_sample, default=0)

    @property
    def loop_lag_max_s(self) -> float:
        return max(self.loop_lag_per_sample, default=0.0)

    @property
    def lag_limit_s(self) -> float:
        """The loop hold that counts as blocking: BLOCKING_LIMIT_S, whatever the delay."""
        return BLOCKING_LIMIT_S

    @property
    def blocking_lag_s(self) -> float:
        """The longest time the app's own code held the loop: the longest stall less its
        garbage collection and the time the loop waited for a CPU (the sampler's stalls);
        the raw loop lag when the sampler caught none."""
        if not self.stalls:
            return self.loop_lag_max_s
        return max(stall_held_s(s) for s in self.stalls)

    @property
    def gc_per_request_s(self) -> float | None:
        """Seconds of garbage collection in the app per call of the path (median)."""
        if not self.app_gc_per_sample:
            return None
        return statistics.median(self.app_gc_per_sample)

    def waves(self, name: str | None = None) -> list[int] | None:
        """The held probe's wave sizes at one upstream (the first when None); None when
        this measurement has no structure."""
        if not self.structure:
            return None
        if name is None:
            name = self.upstream_names[0] if self.upstream_names else next(iter(self.structure))
        return list(self.structure.get(name, []))

    @property
    def cpu_per_request_s(self) -> float | None:
        """The app's CPU time for one call of the path (median over samples)."""
        if not self.app_cpu_per_sample:
            return None
        return statistics.median(self.app_cpu_per_sample)

    @property
    def cpu_per_call_s(self) -> float | None:
        """The app's CPU time per upstream call, where n is known."""
        cpu = self.cpu_per_request_s
        if cpu is None or not self.n:
            return None
        return cpu / self.n

    @property
    def upstream_names(self) -> list[str]:
        """The stack's upstreams, the default (first) one first."""
        return list(self.upstream_gauges)

    def upstream(self, name: str | None = None) -> UpstreamGauges:
        """The exact gauges of one upstream (the first when `name` is None)."""
        if not self.upstream_gauges:
            raise KeyError("this measurement holds no per-upstream gauges")
        if name is None:
            name = next(iter(self.upstream_gauges))
        if name not in self.upstream_gauges:
            known = ", ".join(self.upstream_gauges)
            raise KeyError(f"no upstream named {name!r} (this stack has: {known})")
        return UpstreamGauges.from_lists(name, self.upstream_gauges[name], self.waves(name))

    @property
    def connections_per_sample(self) -> list[int]:
        """New TCP connections per sample, all upstreams summed (warm-up excluded)."""
        lists = [g.get("connections", []) for g in self.upstream_gauges.values()]
        return [sum(column) for column in zip(*lists, strict=True)] if lists else []

    @property
    def connections_opened(self) -> int:
        """The most new TCP connections accepted in one sample, all upstreams summed."""
        return max(self.connections_per_sample, default=0)

    @property
    def applied_delay_s(self) -> float | None:
        """The delay the default upstream really applied per call (median over samples; the
        largest call's when one wave holds all n), from the stub's gauge; None in older data."""
        gauges = next(iter(self.upstream_gauges.values()), {})
        sums, peaks = gauges.get("delay_ms_sum", []), gauges.get("delay_ms_max", [])
        requests = gauges.get("requests", [])
        if not sums or len(sums) != len(requests) or len(peaks) != len(sums):
            return None
        one_wave = (
            self.n is not None and self.concurrency is not None and self.concurrency >= self.n
        )
        per_sample = [
            (peak if one_wave else total / count) / 1000
            for total, peak, count in zip(sums, peaks, requests, strict=True)
            if count
        ]
        return statistics.median(per_sample) if per_sample else None

    @property
    def ideal_s(self) -> float | None:
        if self.ideal_given_s is not None:
            return self.ideal_given_s
        if self.n is None or self.concurrency is None:
            return None
        applied = self.applied_delay_s
        delay = applied if applied is not None else self.upstream_delay_s
        if not delay:
            return None  # unknown, or delay 0: no ideal time to compare with
        return ideal_seconds(delay, self.n, self.concurrency)

    @property
    def efficiency(self) -> float | None:
        ideal = self.ideal_s
        if ideal is None or not self.median_s:
            return None
        return ideal / self.median_s

    @property
    def overhead_per_call_s(self) -> float | None:
        """(median - ideal) / n: the app's own cost per upstream call."""
        ideal = self.ideal_s
        if ideal is None or not self.n:
            return None
        return (self.median_s - ideal) / self.n

    def to_dict(self) -> dict[str, Any]:
        """Raw fields plus the derived statistics, JSON-ready."""
        data = asdict(self)
        for name in (
            "median_s",
            "p95_s",
            "min_s",
            "max_s",
            "spread",
            "upstream_requests",
            "upstream_peak_inflight",
            "loop_lag_max_s",
            "blocking_lag_s",
            "cpu_per_request_s",
            "cpu_per_call_s",
            "applied_delay_s",
            "ideal_s",
            "efficiency",
            "overhead_per_call_s",
            "connections_opened",
            "first_byte_median_s",
            "first_byte_p95_s",
        ):
            data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        names = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in names}
        if values.get("structure") is None:
            values["structure"] = {}  # saved before the held probe existed
        return cls(**values)

    def __repr__(self) -> str:
        parts = [
            f"{self.method} {self.path}" if self.method != "GET" else self.path,
            f"median={self.median_s * 1000:.1f}ms",
            f"p95={self.p95_s * 1000:.1f}ms",
            f"n_samples={len(self.samples)}",
            f"upstream_requests={self.upstream_requests}",
            f"upstream_peak={self.upstream_peak_inflight}",
            *([f"structure={self.structure}"] if self.structure else []),
            f"loop_lag_max={self.loop_lag_max_s * 1000:.1f}ms",
        ]
        if self.efficiency is not None:
            parts.append(f"efficiency={self.efficiency:.2f}")
        return f"<Measurement {' '.join(parts)}>"


class MeasurementError(AssertionError):
    """The path could not be measured (the app answered with an error, or not at all)."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        #: The app's last log lines, when the app is to blame.
        self.log_tail = log_tail


class FanoutWarning(UserWarning):
    """Something that makes a measurement less than clean, said in one line."""


@dataclass
class UpstreamGauges:
    """One upstream's exact gauges in a Measurement: per sample, and the most in one sample."""

    name: str
    requests_per_sample: list[int]
    peak_per_sample: list[int]
    connections_per_sample: list[int]
    #: Of those, the ones already closed when the sample's request had been answered
    #: (empty in data saved before the stub counted them).
    closed_per_sample: list[int] = field(default_factory=list)
    #: 429 answers by the stub's max_inflight, and error statuses, summed over samples.
    rejected: int = 0
    errors: int = 0
    #: The held probe's wave sizes at this upstream; None without a held probe.
    waves: list[int] | None = None

    @property
    def structure_peak(self) -> int | None:
        """The most calls the code puts in flight at once here (the largest wave), exact."""
        return None if self.waves is None else max(self.waves, default=0)

    @property
    def peak_label(self) -> str:
        """The peak for a table: the held one, with the timed one beside it when lower
        (`100 (timed 62)`); the timed one alone without a held probe."""
        held, timed = self.structure_peak, self.peak_inflight
        if held is None:
            return str(timed)
        return str(held) if timed >= held else f"{held} (timed {timed})"

    @property
    def requests(self) -> int:
        return max(self.requests_per_sample, default=0)

    @property
    def peak_inflight(self) -> int:
        return max(self.peak_per_sample, default=0)

    @property
    def connections_opened(self) -> int:
        return max(self.connections_per_sample, default=0)

    @classmethod
    def from_lists(
        cls, name: str, data: Mapping[str, list[int]], waves: list[int] | None = None
    ) -> UpstreamGauges:
        return cls(
            waves=waves,
            name=name,
            requests_per_sample=list(data.get("requests", [])),
            peak_per_sample=list(data.get("peak_inflight", [])),
            connections_per_sample=list(data.get("connections", [])),
            closed_per_sample=list(data.get("connections_closed", [])),
            rejected=sum(data.get("rejected", [])),
            errors=sum(data.get("errors", [])),
        )


#: The per-sample counters kept for each upstream (names in the stub's stats).
GAUGE_KEYS = (
    "requests",
    "peak_inflight",
    "connections",
    "connections_closed",
    "rejected",
    "errors",
)
#: The stub's sum and largest of the delays it applied per sample (ms), for the ideal time.
DELAY_KEYS = ("delay_ms_sum", "delay_ms_max")
#: How long a sample waits for calls of an earlier test to end when no timeout is given.
DEFAULT_IDLE_WAIT_S = 30.0


def send_request(
    client: httpx2.Client,
    app: Any,
    method: str,
    url: str,
    path: str,
    **kwargs: Any,
) -> httpx2.Response:
    """One request to the app under test; the harness's own failures as one-line errors:
    the app process died (with its exit), or the request timed out (with the limit)."""
    __tracebackhide__ = True
    gone = _death(app, wait_s=0)
    if gone:
        raise MeasurementError(
            f"the app process died ({gone}) before {method} {path}", _tail(app)
        ) from None
    try:
        return _timed_request(client, method, url, **kwargs)
    except httpx2.TimeoutException:
        limit = client.timeout.read
        raise MeasurementError(
            f"{method} {path} did not answer within {limit:g} s (the request timeout, "
            "--fanout-request-timeout)",
            _tail(app),
        ) from None
    except httpx2.TransportError as exc:
        died = _death(app)
        if died:
            raise MeasurementError(
                f"the app process died ({died}) during {method} {path}", _tail(app)
            ) from None
        raise MeasurementError(
            f"{method} {path}: the app did not answer: {type(exc).__name__}: {exc}", _tail(app)
        ) from None


#: Where a timed answer keeps its times: seconds from the send to the body's first and
#: last byte. A streaming endpoint is judged by both: a change that delays the first token
#: is a regression even when the total stays.
_FIRST_BYTE = "fanout.first_byte_s"
_LAST_BYTE = "fanout.last_byte_s"
#: Whether the app streamed the answer: read from the headers as they came on the wire
#: (the answer rebuilt from the body has a length of its own).
_STREAMED = "fanout.streamed"


def _timed_request(client: httpx2.Client, method: str, url: str, **kwargs: Any) -> httpx2.Response:
    """`client.request(...)`, with _FIRST_BYTE and _LAST_BYTE in the answer's extensions
    (an empty body's first byte is its last)."""
    request = client.build_request(method, url, **kwargs)
    start = time.perf_counter()
    streamed = client.send(request, stream=True)
    first: float | None = None
    chunks = []
    try:
        for chunk in streamed.iter_raw():
            if first is None and chunk:
                first = time.perf_counter() - start
            chunks.append(chunk)
    finally:
        streamed.close()
    last = time.perf_counter() - start
    return httpx2.Response(
        streamed.status_code,
        headers=streamed.headers,
        content=b"".join(chunks),
        request=request,
        extensions={
            **streamed.extensions,
            _FIRST_BYTE: last if first is None else first,
            _LAST_BYTE: last,
            _STREAMED: _chunked(streamed.headers),
        },
    )


def unexpected_status(
    method: str, path: str, response: httpx2.Response, expected: int, during: str = ""
) -> str:
    """`POST /x answered 301, expected 200: ...` with the start of the body, and where a
    redirect pointed (its body is often empty: a missing trailing slash, say); another
    success (Litestar's POST answers 201) names the option that accepts it."""
    status = response.status_code
    where = response.headers.get("location") if 300 <= status < 400 else None
    note = f" (a redirect to {where}; the harness does not follow it)" if where else ""
    if 200 <= status < 300 and 200 <= expected < 300:
        note = f" (if {status} is this route's success, say expect_status={status})"
    return (
        f"{method} {path} answered {status}{note}, expected {expected}{during}: "
        f"{response.text[:300]}"
    )


def check_status(
    response: httpx2.Response,
    method: str,
    path: str,
    expected: int,
    during: str = "",
    log_tail: str = "",
) -> None:
    """Raise MeasurementError (`unexpected_status`) unless `response` has the status asked."""
    __tracebackhide__ = True
    if response.status_code != expected:
        raise MeasurementError(
            unexpected_status(method, path, response, expected, during), log_tail
        )


def _chunked(headers: httpx2.Headers) -> bool:
    encoding = headers.get("transfer-encoding", "")
    return "chunked" in encoding.lower() and "content-length" not in headers


def _streamed(response: httpx2.Response) -> bool:
    """Did the app stream this answer (chunked, no Content-Length), if `_timed_request` sent it?"""
    return bool(response.extensions.get(_STREAMED, False))


def _first_byte_s(response: httpx2.Response) -> float | None:
    """Seconds from the send to the body's first byte, if `_timed_request` sent it."""
    value = response.extensions.get(_FIRST_BYTE)
    return float(value) if value is not None else None


def _tail(app: Any) -> str:
    return app.log_tail() if app is not None and hasattr(app, "log_tail") else ""


def _death(app: Any, wait_s: float = 2.0) -> str | None:
    """How the app process ended ('signal 9', 'exit status 3'), or None if it still runs."""
    proc = getattr(app, "proc", None)
    if proc is None:
        return None
    deadline = time.monotonic() + wait_s
    while wait_s and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the connection broke: give the kernel a moment to reap it
    code = proc.poll()
    if code is None:
        return None
    return f"signal {-code}" if code < 0 else f"exit status {code}"


def _as_upstreams(upstream: Any, upstreams: Mapping[str, Any] | None) -> dict[str, Any]:
    if upstreams:
        return dict(upstreams)
    if upstream is None:
        raise TypeError("measure() needs upstream= or upstreams=")
    return {getattr(upstream, "upstream_name", "default"): upstream}


def _app_idle(app: Any, wait_s: float, method: str, path: str, *, own: bool = False) -> None:
    """Wait (bounded) until the app serves no request of an earlier test: one still running
    would keep calling the upstreams during this sample. With `own`, what may still run is
    this measurement's previous sample (a streamed answer's handler can end after its last
    byte left): waited for without a warning."""
    __tracebackhide__ = True
    busy = app.probe_stats().get("inflight", 0)
    if not busy:
        return
    if own:
        deadline = time.monotonic() + wait_s
        while app.probe_stats().get("inflight", 0) and time.monotonic() < deadline:
            time.sleep(0.005)  # polling the probe, bounded by the deadline
        if app.probe_stats().get("inflight", 0):
            raise MeasurementError(
                f"the app still ran the previous call of {method} {path} {wait_s:g} s after "
                "answering it: cannot measure it exactly"
            )
        return
    deadline = time.monotonic() + wait_s
    while app.probe_stats().get("inflight", 0):
        if time.monotonic() > deadline:
            raise MeasurementError(
                f"{busy} request(s) of an earlier test were still running in the app after "
                f"{wait_s:g} s: cannot measure {method} {path} exactly"
            )
        time.sleep(0.01)  # polling the probe, bounded by the deadline
    warnings.warn(
        FanoutWarning(
            f"{busy} request(s) of an earlier test were still running in the app: waited "
            f"for them before measuring {method} {path}"
        ),
        stacklevel=4,
    )


def _settle(upstreams: Mapping[str, Any], wait_s: float, method: str, path: str) -> None:
    """Zero every gauge, first waiting (bounded) for calls still in flight from before."""
    __tracebackhide__ = True
    for name, upstream in upstreams.items():
        answer = upstream.reset(wait_idle_s=wait_s)
        busy = answer.get("in_flight_before", 0)
        if not answer.get("idle", True):
            raise MeasurementError(
                f"{busy} call(s) of an earlier test were still in flight at upstream {name!r} "
                f"after {wait_s:g} s: cannot measure {method} {path} exactly"
            )
        if busy:
            warnings.warn(
                FanoutWarning(
                    f"{busy} call(s) of an earlier test were still in flight at upstream "
                    f"{name!r}: waited for them before measuring {method} {path}"
                ),
                stacklevel=4,
            )


def request_kwargs(
    json: Any = None, content: bytes | str | None = None, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The httpx2 keyword arguments of a request's body and headers, only those given."""
    kwargs: dict[str, Any] = {}
    if json is not None:
        kwargs["json"] = json
    if content is not None:
        kwargs["content"] = content
    if headers:
        kwargs["headers"] = dict(headers)
    return kwargs


def measure(
    client: httpx2.Client,
    app_url: str,
    path: str,
    *,
    upstream: Any = None,
    upstreams: Mapping[str, Any] | None = None,
    app: Any = None,
    repeat: int = 5,
    warmup: int = 1,
    method: str = "GET",
    json: Any = None,
    content: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    n: int | None = None,
    concurrency: int | None = None,
    ideal_s: float | None = None,
    expect_status: int = 200,
    shape: PathShape | None = None,
    idle_wait_s: float | None = None,
    held_probe: bool = True,
) -> Measurement:
    """Send `method path` warmup + repeat times, one at a time, with exact upstream gauges.

    `upstreams` maps names to StubUpstreamServers (or `upstream` is the one);
    the first is the default whose delay gives the ideal time. Before each
    sample every gauge is zeroed after the upstream is idle. `app` is an
    AppServer whose loop probe is read (None: no probe). `n`/`concurrency`
    come from the arguments, else from `shape(path)`; `ideal_s` overrides.
    With `held_probe` (the default), one more request after the warm-up is sent
    with the stubs in hold mode: its waves are `Measurement.structure`.
    """
    __tracebackhide__ = True
    if repeat < 1 or warmup < 0:
        raise ValueError("repeat must be >= 1 and warmup >= 0")
    if ideal_s is not None and not (math.isfinite(ideal_s) and ideal_s > 0):
        raise ValueError(f"ideal_s must be a finite number > 0, got {ideal_s!r}")
    for name, value in (("n", n), ("concurrency", concurrency)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    stubs = _as_upstreams(upstream, upstreams)
    method = method.upper()
    if n is None and concurrency is None and shape is not None:
        known = shape(path)
        if known is not None:
            n, concurrency = known
    if n is not None and concurrency is None:
        concurrency = n
    if n is not None and concurrency is not None:
        concurrency = min(concurrency, n)
    first = next(iter(stubs.values()))
    behaviour = first.behaviour()
    result = Measurement(
        path=path,
        samples=[],
        n=n,
        concurrency=concurrency,
        method=method,
        upstream_gauges={name: {key: [] for key in GAUGE_KEYS} for name in stubs},
        ideal_given_s=ideal_s,
        upstream_delay_s=behaviour.delay_ms / 1000,
        upstream_jitter_s=behaviour.jitter_ms / 1000,
        status_code=expect_status,
        warmup=warmup,
    )
    timeout = client.timeout.read
    wait_s = idle_wait_s if idle_wait_s is not None else (timeout or DEFAULT_IDLE_WAIT_S)
    kwargs = request_kwargs(json, content, headers)
    url = app_url + path
    for index in range(warmup + repeat):
        if index == warmup and held_probe:
            start = time.perf_counter()
            result.structure = _held_probe(
                client, app, stubs, wait_s, method, url, path, kwargs, expect_status, index > 0
            )
            result.structure_probe_s = time.perf_counter() - start
        if app is not None:
            _app_idle(app, wait_s, method, path, own=index > 0)
        _settle(stubs, wait_s, method, path)
        if app is not None:
            app.probe_reset()
        sent = time.monotonic()
        start = time.perf_counter()
        response = send_request(client, app, method, url, path, **kwargs)
        elapsed = time.perf_counter() - start
        answered = time.monotonic()
        check_status(response, method, path, expect_status)
        if index < warmup:
            continue
        result.samples.append(elapsed)
        result.first_byte_per_sample.append(_first_byte_s(response) or elapsed)
        result.streamed = result.streamed or _streamed(response)
        result.sample_windows.append((sent, answered))
        for name, stub in stubs.items():
            stats = stub.stats()
            gauges = result.upstream_gauges[name]
            for key in GAUGE_KEYS:
                gauges[key].append(int(stats.get(key, 0)))
            for key in DELAY_KEYS:
                if key in stats:  # the delays really applied: the ideal time
                    gauges.setdefault(key, []).append(float(stats[key]))
        default = next(iter(result.upstream_gauges.values()))
        result.upstream_requests_per_sample.append(default["requests"][-1])
        result.upstream_peak_per_sample.append(default["peak_inflight"][-1])
        if app is not None:
            probe = app.probe_stats()
            result.loop_lag_per_sample.append(probe["loop_lag_max_s"])
            result.app_cpu_per_sample.append(probe.get("cpu_s", 0.0))
            result.app_gc_per_sample.append(probe.get("gc_s", 0.0))
            added = int(probe.get("threads_peak", 0)) - int(probe.get("threads_start", 0))
            result.app_threads_per_sample.append(max(0, added))
            _keep_longest_stalls(result.stalls, probe.get("stalls_detail", []))
        result.app_errors += _reported_errors(response)
    return result


def _held_probe(
    client: httpx2.Client,
    app: Any,
    stubs: Mapping[str, Any],
    wait_s: float,
    method: str,
    url: str,
    path: str,
    kwargs: Mapping[str, Any],
    expect_status: int,
    after_own: bool = False,
) -> dict[str, list[int]]:
    """One request with every stub holding its calls: {upstream: wave sizes}. `after_own`:
    a warm-up request of this measurement came just before (its handler may still end)."""
    __tracebackhide__ = True
    if app is not None:
        _app_idle(app, wait_s, method, path, own=after_own)
    _settle(stubs, wait_s, method, path)
    settings = hold_settings(app_pid=getattr(app, "pid", None) or None)
    try:
        with hold_all(stubs, settings) as held:
            response = send_request(client, app, method, url, path, **kwargs)
    except HoldBoundError as exc:
        raise MeasurementError(f"the held probe of {method} {path}: {exc}") from None
    if response.status_code != expect_status:
        during = (
            " (the held probe: its upstream calls held until the app sent no more, then "
            "answered together)"
        )
        check_status(response, method, path, expect_status, during, _tail(app))
    return {name: waves.waves for name, waves in held.items()}


#: Stalls a Measurement keeps (the longest), whatever the number of samples.
MAX_STALLS = 10


def _keep_longest_stalls(kept: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    kept.extend(new)
    kept.sort(key=lambda stall: stall.get("duration_s", 0.0), reverse=True)
    del kept[MAX_STALLS:]


def _reported_errors(response: httpx2.Response) -> int:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return 0
    if isinstance(errors, dict) and isinstance(errors.get("count"), int):
        return errors["count"]
    return 0
