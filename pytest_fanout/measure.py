"""Measurements of one path of the app under test, and how they are taken.

A `Measurement` holds what is exact (requests the upstream saw, peak in
flight, loop lag) next to what is noisy (wall-time samples), and relates the
wall time to the ideal one: with upstream delay d, n calls and concurrency c,
the ideal is d * ceil(n / c), and efficiency = ideal / median is portable
between machines where raw seconds are not.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx2

#: How the reference app's paths map to (n, concurrency); None means "n" (all at once)
#: and 1 means one at a time. Users' own paths pass n= and concurrency= to measure().
KNOWN_PATHS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/sync/(?P<n>\d+)$"), "sequential"),
    (re.compile(r"^/blocking/(?P<n>\d+)$"), "sequential"),
    (re.compile(r"^/async/(?P<n>\d+)$"), "all"),
    (re.compile(r"^/async_sem/(?P<n>\d+)/(?P<c>\d+)$"), "bounded"),
]


def shape_of(path: str) -> tuple[int | None, int | None]:
    """(n, concurrency) for a known path of the reference app, else (None, None)."""
    bare = path.split("?", 1)[0]
    for pattern, kind in KNOWN_PATHS:
        match = pattern.match(bare)
        if not match:
            continue
        n = int(match["n"])
        if kind == "sequential":
            return n, 1
        if kind == "all":
            return n, n
        return n, min(n, int(match["c"]))
    return None, None


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
    n: int | None = None
    concurrency: int | None = None
    #: The upstream's configured delay and jitter while measuring.
    upstream_delay_s: float | None = None
    upstream_jitter_s: float = 0.0
    status_code: int = 200
    #: Failed upstream calls the app reported, summed over samples.
    app_errors: int = 0
    #: Who took it: the test's node id, filled in by the plugin.
    test: str = ""
    #: The app's event-loop stalls the probe's stack sampler caught, over all samples,
    #: longest first: {"duration_s", "stacks": [{"count", "frames": [{"file", "line",
    #: "function"}, ...innermost last]}]} (see pytest_fanout.stacks to read them).
    stalls: list[dict[str, Any]] = field(default_factory=list)

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
    def ideal_s(self) -> float | None:
        if self.n is None or self.concurrency is None or self.upstream_delay_s is None:
            return None
        return ideal_seconds(self.upstream_delay_s, self.n, self.concurrency)

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
            "cpu_per_request_s",
            "cpu_per_call_s",
            "ideal_s",
            "efficiency",
            "overhead_per_call_s",
        ):
            data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def __repr__(self) -> str:
        parts = [
            f"{self.path}",
            f"median={self.median_s * 1000:.1f}ms",
            f"p95={self.p95_s * 1000:.1f}ms",
            f"n_samples={len(self.samples)}",
            f"upstream_requests={self.upstream_requests}",
            f"upstream_peak={self.upstream_peak_inflight}",
            f"loop_lag_max={self.loop_lag_max_s * 1000:.1f}ms",
        ]
        if self.efficiency is not None:
            parts.append(f"efficiency={self.efficiency:.2f}")
        return f"<Measurement {' '.join(parts)}>"


class MeasurementError(AssertionError):
    """The path could not be measured (the app answered with an error)."""


def measure(
    client: httpx2.Client,
    app_url: str,
    path: str,
    *,
    upstream: Any,
    app: Any = None,
    repeat: int = 5,
    warmup: int = 1,
    n: int | None = None,
    concurrency: int | None = None,
    expect_status: int = 200,
) -> Measurement:
    """GET `path` warmup + repeat times, one at a time; reset the gauges before each sample.

    `upstream` is a StubUpstreamServer (stats/reset/behaviour); `app` an
    AppServer whose loop probe is read, or None for no probe.
    """
    if repeat < 1 or warmup < 0:
        raise ValueError("repeat must be >= 1 and warmup >= 0")
    known_n, known_c = shape_of(path)
    n = n if n is not None else known_n
    concurrency = concurrency if concurrency is not None else known_c
    if n is not None and concurrency is None:
        concurrency = n
    behaviour = upstream.behaviour()
    result = Measurement(
        path=path,
        samples=[],
        n=n,
        concurrency=concurrency,
        upstream_delay_s=behaviour.delay_ms / 1000,
        upstream_jitter_s=behaviour.jitter_ms / 1000,
        status_code=expect_status,
    )
    for index in range(warmup + repeat):
        upstream.reset()
        if app is not None:
            app.probe_reset()
        start = time.perf_counter()
        response = client.get(app_url + path)
        elapsed = time.perf_counter() - start
        if response.status_code != expect_status:
            raise MeasurementError(
                f"GET {path} answered {response.status_code}, expected {expect_status}: "
                f"{response.text[:300]}"
            )
        if index < warmup:
            continue
        stats = upstream.stats()
        result.samples.append(elapsed)
        result.upstream_requests_per_sample.append(stats["requests"])
        result.upstream_peak_per_sample.append(stats["peak_inflight"])
        if app is not None:
            probe = app.probe_stats()
            result.loop_lag_per_sample.append(probe["loop_lag_max_s"])
            result.app_cpu_per_sample.append(probe.get("cpu_s", 0.0))
            _keep_longest_stalls(result.stalls, probe.get("stalls_detail", []))
        result.app_errors += _reported_errors(response)
    return result


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
