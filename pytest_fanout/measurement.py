"""What a measurement is: the request sent, the numbers it gave, and their statistics.

Plain data, apart from the machinery that takes it (`pytest_fanout.measure`
sends the request, holds the stubs, reads the probe): the gate reads saved
runs, `diagnose` and the assertions judge a `Measurement`, and none of them
needs httpx2 or the servers to do it. This module imports neither.

A `Measurement` holds what is exact (requests the upstream saw, the
request's concurrency structure from the held probe) next to what depends on
the machine (the timed samples: wall time, the peak in flight they reached at
the configured delay, loop lag, CPU), and relates the wall time to the ideal
one: with upstream delay d, n calls and concurrency c, the ideal is
d * ceil(n / c), and efficiency = ideal / median is portable between machines
where raw seconds are not.
"""

from __future__ import annotations

import base64
import contextlib
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_fanout.limits import BUILTIN_FILE, CPU_METHOD, GC_FUNCTION

#: How long the app's own code may hold its event loop before it counts as blocking, whatever
#: the upstream delay: a blocking call to an upstream holds it for the whole delay (50 ms or
#: more at the delays tests use), so the verdict is the same at 50, 100 and 200 ms. Garbage
#: collection and time the loop thread waited for a CPU are not the code's and not counted.
BLOCKING_LIMIT_S = 0.04

#: Stalls a Measurement keeps (the longest), whatever the number of samples.
MAX_STALLS = 10

#: (the file's tail, the function) of the event loop's own runner: the innermost Python frame
#: of a loop thread that runs no callback (uvloop's loop is C under asyncio.run; the stdlib
#: loop polls in its selector). App code on the loop always has a frame below these.
LOOP_RUNNER_FRAMES = frozenset(
    {
        ("/asyncio/runners.py", "run"),
        ("/asyncio/base_events.py", "run_until_complete"),
        ("/asyncio/base_events.py", "run_forever"),
        ("/asyncio/base_events.py", "_run_once"),
        ("/selectors.py", "select"),
        ("/uvicorn/_compat.py", "asyncio_run"),
    }
)

#: (n, concurrency) of a path, or None when unknown: what `pytest_fanout_path_shape` returns.
PathShape = Callable[[str], "tuple[int, int] | None"]


def stall_held_s(stall: Mapping[str, Any]) -> float:
    """How long the app's own code held the loop in one stall: its duration less its
    garbage collection, the time the app's threads waited for a CPU, and the stack
    sampler's own time; and never less than the loop thread's own CPU in it (less the
    collector's) nor the sleeps in a call the sampler measured.

    The waits are summed over every thread of the app and can pass the duration while the
    loop thread runs: a CPU loop of 0.4 s, 1.8 s long beside CPU hogs, read as held 0 ms.
    The loop's CPU is read from the watchdog's last reading before the stall (`lead_s`
    earlier): the CPU of that lead is not the stall's, so it is taken off (a busy, healthy
    /async/1000 read "held 41 ms" of a 41 ms stall with 3 ms waiting for a CPU)."""
    duration, starved = stall.get("duration_s", 0.0), stall.get("starved_s", 0.0)
    sampler = stall.get("sampler_s", 0.0)  # the probe's own sampling, not the app's code
    gc_s = stall_gc_s(stall)
    held = max(0.0, duration - starved - sampler - gc_s)
    ran, lead = stall.get("ran_s"), float(stall.get("lead_s", 0.0))
    cpu = 0.0 if ran is None else max(0.0, float(ran) - gc_s - lead)
    return max(held, min(duration, max(cpu, _sampled_held_s(stall), _gil_held_s(stall))))


def at_loop_runner(frames: Sequence[Mapping[str, Any]]) -> bool:
    """True when a sampled stack's innermost Python frame is the loop's own runner
    (`LOOP_RUNNER_FRAMES`): the loop thread was running no callback, the app's or a
    library's."""
    inner = next((f for f in reversed(frames) if f.get("file") != BUILTIN_FILE), None)
    if inner is None:
        return False
    path = str(inner.get("file", "")).replace("\\", "/")
    function = str(inner.get("function", "")).rsplit(".", 1)[-1]
    return any(path.endswith(tail) and function == name for tail, name in LOOP_RUNNER_FRAMES)


def loop_off_cpu_s(stall: Mapping[str, Any]) -> float | None:
    """Seconds of a stall the loop thread was neither running nor waiting for a CPU (asleep:
    in a wait, or for the GIL), from its own times; None where the stall has not them."""
    ran, waited = stall.get("ran_s"), stall.get("waited_s")
    if ran is None or waited is None:
        return None
    return float(stall.get("duration_s", 0.0)) - float(ran) - float(waited)


def _gil_held_s(stall: Mapping[str, Any]) -> float:
    """The hold of another thread of the app that kept the GIL: in a stall whose every
    sampled stack is the loop's runner, the time the loop thread was off the CPU (neither
    running nor waiting for one) while the app's other threads ran, at most; 0 otherwise.
    Beside CPU hogs the holder waits for a CPU too, and those waits, summed with the
    others, would excuse a 150 ms `sum` in C entirely."""
    stacks, others, off_cpu = stall.get("stacks") or [], stall.get("others_ran_s"), None
    if not stacks or others is None or (off_cpu := loop_off_cpu_s(stall)) is None:
        return 0.0
    if not all(at_loop_runner(s.get("frames", [])) for s in stacks):
        return 0.0
    # The others' CPU is read from before the stall too (`lead_s`): that part is not its.
    others_in = float(others) - float(stall.get("lead_s", 0.0))
    return max(0.0, min(others_in, off_cpu))


def _sampled_held_s(stall: Mapping[str, Any]) -> float:
    """The hold the sampler measured in the stacks where the loop thread slept in a call
    (`held_s`: its wall time less the process's waits for a CPU); 0 without those figures.
    The process-wide waits for a CPU that the line above subtracts include other threads'
    waits while the loop slept in a call: on a busy runner they would excuse a real
    `time.sleep`."""
    return sum(
        float(stack.get("held_s", 0.0))
        for stack in stall.get("stacks", [])
        if not any(f.get("function") == GC_FUNCTION for f in stack.get("frames", [])[-1:])
        # Only the waits: code on the CPU is held by the line above, which takes the
        # collector's time out (a stack sampled after a collection carries its time).
        and float(stack.get("slept_s", 0.0)) > float(stack.get("ran_s", 0.0))
    )


def stall_gc_s(stall: Mapping[str, Any]) -> float:
    """The garbage collector's own time in a stall: its wall time less its share of the
    time the loop waited for a CPU (taken as spread evenly over the stall)."""
    gc_s, starved = stall.get("gc_s", 0.0), stall.get("starved_s", 0.0)
    ran = stall.get("ran_s")
    if ran is not None and ran + starved > 0:
        return min(ran, gc_s * ran / (ran + starved))
    return gc_s


def has_rate_limit(limits: Mapping[str, Any] | None) -> bool:
    """A stub's limits in force (its stats' "limits") hold a rate limit: the upstream's
    own or one of its routes'."""
    return bool(limits and (limits.get("rate_limit") or limits.get("routes")))


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


#: An HTTP method: one token (RFC 9110), upper-cased by `Request`.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")


@dataclass(frozen=True)
class Request:
    """One request to the app under test, as a test measures it: every part of the harness
    that sends it (measure, the held probe, A/B, the critical path, the commands) takes
    this one value, so its checks and its httpx2 arguments live in one place.

    Bad input is one ValueError line: a path without its leading "/", a status outside
    100-599, a body given both as `json` and as `content`.
    """

    path: str
    method: str = "GET"
    json: Any = None
    content: bytes | str | None = None
    headers: Mapping[str, str] | None = None
    #: The status a good answer has; any other is a MeasurementError.
    expect_status: int = 200

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"the path {self.path!r} must start with /")
        method = self.method.upper() if isinstance(self.method, str) else self.method
        if not isinstance(method, str) or not _METHOD.fullmatch(method):
            raise ValueError(f"{self.method!r} is not an HTTP method")
        status = self.expect_status
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"expect_status must be an HTTP status (100-599), got {status!r}")
        if self.json is not None and self.content is not None:
            raise ValueError(f"{method} {self.path}: give json= or content=, not both")
        object.__setattr__(self, "method", method)
        if self.headers is not None:
            object.__setattr__(self, "headers", dict(self.headers))

    @property
    def label(self) -> str:
        """`GET /x`: how messages and titles name the request."""
        return f"{self.method} {self.path}"

    def kwargs(self) -> dict[str, Any]:
        """httpx2's keyword arguments for the body and headers, only those given."""
        kwargs: dict[str, Any] = {}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.content is not None:
            kwargs["content"] = self.content
        if self.headers:
            kwargs["headers"] = dict(self.headers)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the parts given (bytes content as `content_base64`)."""
        data: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.json is not None:
            data["json"] = self.json
        if isinstance(self.content, bytes):
            data["content_base64"] = base64.b64encode(self.content).decode("ascii")
        elif self.content is not None:
            data["content"] = self.content
        if self.headers:
            data["headers"] = dict(self.headers)
        data["expect_status"] = self.expect_status
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        """The request `to_dict` gave (checked again, as any other)."""
        content = data.get("content")
        if data.get("content_base64") is not None:
            content = base64.b64decode(data["content_base64"], validate=True)
        return cls(
            path=data["path"],
            method=data.get("method", "GET"),
            json=data.get("json"),
            content=content,
            headers=data.get("headers"),
            expect_status=data.get("expect_status", 200),
        )


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
    #: CPU seconds the app's process spent during each sample (from the probe), less what
    #: the probe itself spent there (`probe_cpu_per_sample`): the app's own cost.
    app_cpu_per_sample: list[float] = field(default_factory=list)
    #: CPU seconds of each sample the probe spent in the app's process and took off
    #: `app_cpu_per_sample`: its watchdog thread (exact) and its lag ticks (priced, see
    #: docs/gating.md). They grow with wall time, the app's own cost does not.
    probe_cpu_per_sample: list[float] = field(default_factory=list)
    #: How `app_cpu_per_sample` was reckoned (`limits.CPU_METHOD`): the gate compares cpu
    #: only between runs of the same method. None: saved before it was recorded.
    cpu_method: int | None = CPU_METHOD
    #: Seconds the app's threads waited for a CPU during each sample (the kernel's run-queue
    #: time, from the probe; None where /proc does not say): a busy machine, not the code.
    app_wait_per_sample: list[float | None] = field(default_factory=list)
    #: Seconds of garbage collection in the app's process during each sample.
    app_gc_per_sample: list[float] = field(default_factory=list)
    #: Threads the app's process started during each sample, at their most (a fan-out on a
    #: thread pool started per request).
    app_threads_per_sample: list[int] = field(default_factory=list)
    n: int | None = None
    concurrency: int | None = None
    #: The request's method (and `path` above; the whole request is `request`).
    method: str = "GET"
    #: Per named upstream, per sample (exact): requests, peak, connections, rejected, errors.
    #: The first upstream's requests and peak are also the two lists above.
    upstream_gauges: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    #: An ideal wall time given by the test (a fan-out with several stages), in seconds.
    ideal_given_s: float | None = None
    #: The default upstream's configured delay and jitter while measuring.
    upstream_delay_s: float | None = None
    upstream_jitter_s: float = 0.0
    #: The status every answer had (the request's `expect_status`).
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
    #: With a hang-up (`measure(..., disconnect_after_s=)`): the harness closed its
    #: connection this long after sending each request (samples then time the hang-up),
    #: and calls still running `disconnect_grace_s` after it count as `after_disconnect`.
    disconnect_after_s: float | None = None
    disconnect_grace_s: float | None = None
    #: The median sample's waterfall (`Waterfall.to_dict()`), once `fanout.waterfall(m)`
    #: drew it: the gate's report shows it for a regressed case.
    timeline: dict[str, Any] | None = None
    #: Causal weights (`CriticalPath.to_dict()`) when the test recorded them
    #: (`fanout.critical_path(..., record=m)`): portable, compared from any machine.
    critical_path: dict[str, Any] | None = None
    #: Per upstream, the limits it enforced while measuring (the stub's `limits()`):
    #: {"max_inflight", and with a rate limit "rate_limit" ("50/s"), "per_s", "burst";
    #: "routes": {"GET /x": {...}}}.
    upstream_limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per upstream, each retry of a 429 in the timed samples: [sample index, method,
    #: path, the wait the 429 asked for (s; None: none), the wait the client took (s)].
    upstream_retry_waits: dict[str, list[list[Any]]] = field(default_factory=dict)
    #: The held probe's calls at each upstream, in arrival order, by route ("GET
    #: /item/{id}": the stub's route template, or the path with its ids folded): with the
    #: wave sizes, which route each wave called; {} without a held probe (or older data).
    structure_routes: dict[str, list[str]] = field(default_factory=dict)
    #: For a streamed answer: seconds from each sample's send to the upstreams' first byte
    #: (the earliest call's arrival plus the delay its stub applied before answering), to
    #: the end of the first call's answer and to their last byte (the last call's answer
    #: ended), from the stubs' call logs on the same clock; empty when not streamed.
    upstream_first_byte_per_sample: list[float] = field(default_factory=list)
    upstream_first_end_per_sample: list[float] = field(default_factory=list)
    upstream_last_byte_per_sample: list[float] = field(default_factory=list)

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
    #: Every held probe's structure when more than one was sent (`held_probes=`), the first
    #: being `structure`; [] with one: the gate tells a structure that varies by them.
    structures: list[dict[str, list[int]]] = field(default_factory=list)
    #: Wall time of the held probe (seconds): what the structure cost.
    structure_probe_s: float | None = None
    #: Why the held probe gave no structure ("" when it did, or none was asked): an app
    #: that never went idle (a thread busy outside the request) is measured without it.
    structure_note: str = ""
    #: The request measured, body and headers included. Given, it sets `path`, `method` and
    #: `status_code`; left out, it is built from them. A saved run keeps those three only
    #: (a body or a header may hold a secret): loaded, its request has no body, and none at
    #: all when the file's path or status is not a request's (a hand-made file).
    request: Request | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.request is None:
            # A record read from a file whose path or status is not a request's: its numbers
            # are still good, it just has no request.
            with contextlib.suppress(ValueError):
                self.request = Request(
                    self.path, method=self.method, expect_status=self.status_code
                )
        else:
            self.path, self.method = self.request.path, self.request.method
            self.status_code = self.request.expect_status

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
        when the sampler caught none, each sample's raw loop lag less the app's wait for a
        CPU in that sample (`uncaught_lag_wait_s`)."""
        if not self.stalls:
            return max(
                (lag - wait for lag, wait in self._lags_and_waits()),
                default=self.loop_lag_max_s,
            )
        return max(stall_held_s(s) for s in self.stalls)

    def _lags_and_waits(self) -> list[tuple[float, float]]:
        """(loop lag, the app's wait for a CPU, at most the lag) of each sample; [] when a
        sample's wait is unknown (not Linux, an older record)."""
        lags, waits = self.loop_lag_per_sample, self.app_wait_per_sample
        if len(waits) != len(lags) or any(w is None for w in waits):
            return []
        return [(lag, min(lag, float(wait or 0.0))) for lag, wait in zip(lags, waits, strict=True)]

    @property
    def uncaught_lag_wait_s(self) -> float:
        """Of the worst sample's loop lag, the time the app waited for a CPU, when the stack
        sampler caught no stall (off, or its own thread was not running either: a process
        that waits for a CPU stalls its loop and the sampler alike). A field run on a busy
        runner read "blocks the loop: no stack ... stalled 100 ms" for a Flask route that
        held nothing: the whole lag was the runner's. 0.0 with a stall or no figure."""
        if self.stalls:
            return 0.0
        pairs = self._lags_and_waits()
        if not pairs:
            return 0.0
        lag, wait = max(pairs, key=lambda pair: pair[0])
        return wait

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

    def keep_stalls(self, new: list[dict[str, Any]]) -> None:
        """Add a sample's stalls, keeping the MAX_STALLS longest."""
        self.stalls.extend(new)
        self.stalls.sort(key=lambda stall: stall.get("duration_s", 0.0), reverse=True)
        del self.stalls[MAX_STALLS:]

    @property
    def cpu_per_request_s(self) -> float | None:
        """The app's CPU time for one call of the path (median over samples)."""
        if not self.app_cpu_per_sample:
            return None
        return statistics.median(self.app_cpu_per_sample)

    @property
    def app_wait_share(self) -> float | None:
        """The app's wait for a CPU over its samples' wall time (0.12: its threads waited 12%
        as long as the samples took), or None when a sample has no figure (not Linux, an
        older record): how busy the machine was for the app, whatever the code."""
        waits, wall = self.app_wait_per_sample, sum(self.samples)
        if len(waits) != len(self.samples) or wall <= 0:
            return None
        known = [w for w in waits if w is not None]
        return sum(known) / wall if len(known) == len(waits) else None

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
        gauges = UpstreamGauges.from_lists(name, self.upstream_gauges[name], self.waves(name))
        gauges.limits = dict(self.upstream_limits.get(name, {}))
        gauges.retry_waits = [
            RetryWait(*wait) for wait in self.upstream_retry_waits.get(name, []) if len(wait) == 5
        ]
        windows = [end - start for start, end in self.sample_windows]
        if len(windows) == len(gauges.requests_per_sample):
            gauges.sample_s = windows
        return gauges

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
        del data["request"]  # its method, path and status are fields; never its body
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
            "app_wait_share",
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
        values = {k: v for k, v in data.items() if k in names and k != "request"}
        if values.get("structure") is None:
            values["structure"] = {}  # saved before the held probe existed
        values.setdefault("cpu_method", None)  # saved before it was recorded: not this one
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
            *(["structure=not-taken"] if self.structure_note else []),
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


#: A retry that came this much before the wait asked for is not early: a client's timer
#: and the stub's stamp may differ by a clock tick, and retry-after-ms is rounded up.
_WAIT_SLACK_S = 0.001


@dataclass(frozen=True)
class RetryWait:
    """One retry of a call answered 429: how long after the 429 it came (`waited_s`) and
    the wait the 429 asked for (`asked_s`: retry-after-ms when given, else Retry-After;
    None when it asked for none)."""

    sample: int
    method: str
    path: str
    asked_s: float | None
    waited_s: float

    @property
    def early(self) -> bool:
        """It came before the wait asked for."""
        return self.asked_s is not None and self.waited_s + _WAIT_SLACK_S < self.asked_s


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
    #: Every 429 (see `rejected_per_sample`), and error statuses, summed over samples.
    rejected: int = 0
    errors: int = 0
    #: The held probe's wave sizes at this upstream; None without a held probe.
    waves: list[int] | None = None
    #: Calls of each sample still in flight at the stub when the endpoint's answer ended,
    #: or begun after it (orphans: `asyncio.gather` leaves them running when one fails);
    #: empty when not measured (a hang-up measurement, or older data).
    orphaned_per_sample: list[int] = field(default_factory=list)
    #: With a hang-up: calls of each sample still running the grace after the caller hung
    #: up, or begun after it (work nobody reads); empty when not measured.
    after_disconnect_per_sample: list[int] = field(default_factory=list)
    #: Calls of each sample whose connection the app closed before their answer
    #: (cancelled): their connections are gone, so the next sample opens new ones.
    cut_per_sample: list[int] = field(default_factory=list)
    #: Every 429 of each sample, whatever answered it: a rate limit, max_inflight, a
    #: route's status, a handler (`rejected` is their sum).
    rejected_per_sample: list[int] = field(default_factory=list)
    #: Of those, the 429s of each sample that a rate limit sent (the upstream's or a
    #: route's), and those max_inflight sent; the rest a route's status or a handler sent.
    #: Empty in data saved before the stub told them apart (`sources_known`).
    limited_per_sample: list[int] = field(default_factory=list)
    capped_per_sample: list[int] = field(default_factory=list)
    #: Calls of each sample that repeated the method, path, query and body of an earlier
    #: call of the same sample answered 429 or 5xx, or cut off (`retries` is their sum).
    retries_per_sample: list[int] = field(default_factory=list)
    #: Distinct calls of each sample (different method, path, query or body).
    distinct_per_sample: list[int] = field(default_factory=list)
    #: The most times one call was retried in each sample.
    most_retries_per_sample: list[int] = field(default_factory=list)
    #: Each retry of a 429: when it came against the wait the 429 asked for.
    retry_waits: list[RetryWait] = field(default_factory=list)
    #: The limits the stub enforced (`Measurement.upstream_limits`).
    limits: dict[str, Any] = field(default_factory=dict)
    #: Wall time of each sample (s), for calls per second; empty when unknown.
    sample_s: list[float] = field(default_factory=list)
    #: The delay the stub applied to the calls it answered, summed per sample (ms).
    delay_ms_sum_per_sample: list[float] = field(default_factory=list)

    @property
    def retries(self) -> int:
        """Retries over every sample (exact): calls that repeated a failed call."""
        return sum(self.retries_per_sample)

    @property
    def most_retries(self) -> int:
        """The most times any one call was retried within a sample."""
        return max(self.most_retries_per_sample, default=0)

    @property
    def amplification(self) -> float:
        """Calls / distinct calls over the samples: 1.0 when nothing was sent twice."""
        distinct = sum(self.distinct_per_sample)
        if not distinct:
            return 1.0
        return sum(self.requests_per_sample[: len(self.distinct_per_sample)]) / distinct

    @property
    def rate_limit(self) -> str:
        """The upstream's rate limit as configured ("50/s"), "" when none."""
        return str(self.limits.get("rate_limit", ""))

    @property
    def rate_limit_per_s(self) -> float | None:
        per_s = self.limits.get("per_s")
        return float(per_s) if per_s else None

    @property
    def route_limits(self) -> dict[str, dict[str, Any]]:
        """The routes' own rate limits: "GET /x" -> {"rate_limit", "per_s", "burst"}."""
        return dict(self.limits.get("routes", {}))

    @property
    def max_inflight(self) -> int:
        return int(self.limits.get("max_inflight", 0) or 0)

    @property
    def has_limit(self) -> bool:
        """A rate limit (the upstream's or a route's) or a max_inflight cap is set."""
        return has_rate_limit(self.limits) or bool(self.max_inflight)

    @property
    def limited(self) -> int:
        """429s a rate limit sent, over every sample (exact; 0 when not told apart)."""
        return sum(self.limited_per_sample)

    @property
    def capped(self) -> int:
        """429s max_inflight sent (too many in flight), over every sample (exact)."""
        return sum(self.capped_per_sample)

    @property
    def sources_known(self) -> bool:
        """The stub told its 429s apart (a limit's, max_inflight's, the rest): False for
        data saved before it did, whose 429s name no cause."""
        return len(self.limited_per_sample) == len(self.rejected_per_sample) == len(
            self.capped_per_sample
        ) and bool(self.rejected_per_sample)

    @property
    def calls_per_s(self) -> float | None:
        """The most calls per second the service sent here in a sample: its calls over the
        sample's wall time (None when the times are unknown)."""
        rates = [
            n / s for n, s in zip(self.requests_per_sample, self.sample_s, strict=False) if s > 0
        ]
        return max(rates) if rates else None

    @property
    def mean_latency_s(self) -> float | None:
        """The mean delay of the calls the stub answered (not the rejected ones)."""
        answered = sum(
            n - r for n, r in zip(self.requests_per_sample, self.rejected_per_sample, strict=False)
        )
        total = sum(self.delay_ms_sum_per_sample)
        return total / answered / 1000 if answered > 0 and self.delay_ms_sum_per_sample else None

    #: Connections to this upstream open when each sample had been answered (every one an
    #: item call used, from any sample): a client built and never closed makes it grow.
    live_per_sample: list[int] = field(default_factory=list)

    @property
    def orphaned(self) -> int:
        """Orphaned calls over every sample after warm-up (exact; 0 when not measured)."""
        return sum(self.orphaned_per_sample)

    @property
    def after_disconnect(self) -> int:
        """Calls that ran on after the caller hung up, over every sample (exact)."""
        return sum(self.after_disconnect_per_sample)

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
            orphaned_per_sample=list(data.get("orphaned", [])),
            after_disconnect_per_sample=list(data.get("after_disconnect", [])),
            cut_per_sample=list(data.get("cut", [])),
            rejected_per_sample=list(data.get("rejected", [])),
            limited_per_sample=list(data.get("limited", [])),
            capped_per_sample=list(data.get("capped", [])),
            retries_per_sample=list(data.get("retries", [])),
            distinct_per_sample=list(data.get("distinct", [])),
            most_retries_per_sample=list(data.get("most_retries", [])),
            delay_ms_sum_per_sample=list(data.get("delay_ms_sum", [])),
            live_per_sample=[int(v) for v in data.get("connections_live", [])],
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
    "limited",
    "capped",
    "errors",
    "retries",
    "distinct",
    "most_retries",
)
#: The stub's sum and largest of the delays it applied per sample (ms), for the ideal time.
DELAY_KEYS = ("delay_ms_sum", "delay_ms_max")
#: Counters kept when the stub reports them (absent from older stubs): connections open now.
LIFETIME_KEYS = ("connections_live",)
