"""Causal critical-path weights: how many times the endpoint pays each upstream's delay.

A trace shows when calls ran, not what a faster upstream would buy. The
harness owns the upstreams, so it can try it: for one upstream (or one route
of it) at a time, the stub adds a known delay to every call (or takes some
off), the endpoint is timed, and an unchanged run follows. Each delayed run
is compared with the unchanged runs on both sides of it (which cancels the
machine's drift), giving one estimate of the slope: 0 off the critical path,
1 when paid once, 3 for three sequential rounds. The weight is the median
of those estimates; its 95% interval comes from their spread.

Bounded: the extra delay shrinks with the calls per request (at most
`MAX_ADDED_MS` added to a request however many calls it makes), runs stop
once every interval is narrow, and the whole experiment keeps to `budget_s`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_fanout.artifacts import render_text
from pytest_fanout.servers.calllog import route_key
from pytest_fanout.timeline.calls import RequestTimeline, request_timeline, set_experiment

#: The most a delayed run may add to one call of the path (ms): a path that calls one
#: upstream 200 times gets a small extra per call.
MAX_ADDED_MS = 250.0
#: The extra delay per call never goes under this (ms): below, timer noise wins.
MIN_EXTRA_MS = 2.0
#: Delayed runs per target before an interval may end it, and at most.
MIN_RUNS = 4
MAX_RUNS = 16
#: A target is done when its 95% interval is this narrow (+/-).
TARGET_HALF_WIDTH = 0.05
#: z of a two-sided 95% interval; 1.4826 x MAD estimates a standard deviation.
_Z95 = 1.959964
_MAD_TO_SD = 1.4826

#: Sends the request once; returns (sent, answered) on time.monotonic().
Send = Callable[[], tuple[float, float]]


@dataclass
class Target:
    """What one experiment slows down: an upstream, or one route of it."""

    upstream: str
    #: "GET /stock/{sku}", or "" for every call of the upstream.
    route: str
    calls_per_request: int
    #: The mean delay the stub applies to its calls (ms), and the smallest.
    delay_ms: float
    min_delay_ms: float
    #: The extra delay per call in its delayed runs (ms): +extra, and -faster when > 0.
    extra_ms: float = 0.0
    faster_ms: float = 0.0
    estimates: list[float] = field(default_factory=list)
    #: The estimates of the runs that made it faster (a subset of `estimates`).
    faster_estimates: list[float] = field(default_factory=list)

    @property
    def weight(self) -> float:
        return statistics.median(self.estimates) if self.estimates else math.nan

    @property
    def half_width(self) -> float:
        """The 95% interval's half width (inf with fewer than 3 estimates)."""
        if len(self.estimates) < 3:
            return math.inf
        centre = self.weight
        mad = statistics.median(abs(e - centre) for e in self.estimates)
        spread = max(_MAD_TO_SD * mad, statistics.pstdev(self.estimates) / 3)
        # The median's standard error is ~1.25 x the mean's.
        return _Z95 * 1.2533 * spread / math.sqrt(len(self.estimates))

    @property
    def saves_per_10ms(self) -> float:
        """What 10 ms off each of its calls saves (ms): from the faster runs when there are
        3 or more (the local slope, what a speed-up buys), else from the weight."""
        if len(self.faster_estimates) >= 3:
            return 10 * statistics.median(self.faster_estimates)
        return 10 * self.weight

    def levels(self) -> list[float]:
        """The extra delays its delayed runs take in turn (ms)."""
        return [self.extra_ms, -self.faster_ms] if self.faster_ms else [self.extra_ms]


@dataclass
class CriticalPath:
    """The weights of every upstream (and route) on one path's latency."""

    method: str
    path: str
    #: The median of the unchanged runs (s).
    baseline_s: float
    targets: list[Target]
    #: Runs sent and seconds spent on the whole experiment.
    runs: int = 0
    elapsed_s: float = 0.0
    #: The request's unchanged timeline (from the baseline).
    timeline: RequestTimeline | None = None

    @property
    def weights(self) -> dict[str, float]:
        """{upstream: how many times the path pays its delay}, summed over its routes."""
        out: dict[str, float] = {}
        for t in self.targets:
            out[t.upstream] = out.get(t.upstream, 0.0) + t.weight
        return out

    @property
    def route_weights(self) -> dict[tuple[str, str], float]:
        """{(upstream, route): weight}; route "" when the upstream was slowed as a whole."""
        return {(t.upstream, t.route): t.weight for t in self.targets}

    @property
    def own_s(self) -> float:
        """The path's time that no upstream explains: the baseline minus each weight x
        its upstream's delay (the app's own work, and what the harness cannot see)."""
        paid = sum(t.weight * t.delay_ms / 1000 for t in self.targets if t.estimates)
        return max(self.baseline_s - paid, 0.0)

    def rows(self) -> list[list[Any]]:
        return [
            [
                t.upstream,
                t.route or "(all)",
                t.calls_per_request,
                f"{t.delay_ms:.0f} ms",
                f"{_shown(t.weight, 2)}",
                f"{_shown(t.saves_per_10ms, 1)} ms",
                f"+/-{t.half_width:.2f} ({len(t.estimates)} runs)",
            ]
            for t in self.targets
        ]

    def __str__(self) -> str:
        head = (
            f"{self.method} {self.path}: {self.baseline_s * 1000:.1f} ms; "
            f"own time {self.own_s * 1000:.1f} ms; {self.runs} runs in {self.elapsed_s:.1f} s"
        )
        headers = [
            "upstream",
            "route",
            "calls/request",
            "delay",
            "weight",
            "10 ms faster here saves",
            "95% interval",
        ]
        return head + "\n" + render_text(headers, self.rows())

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "baseline_s": self.baseline_s,
            "own_s": self.own_s,
            "runs": self.runs,
            "elapsed_s": self.elapsed_s,
            "targets": [
                {
                    "upstream": t.upstream,
                    "route": t.route,
                    "calls_per_request": t.calls_per_request,
                    "delay_ms": t.delay_ms,
                    "extra_ms": t.extra_ms,
                    "faster_ms": t.faster_ms,
                    "weight": _finite(t.weight),
                    "saves_per_10ms": _finite(t.saves_per_10ms),
                    "half_width": _finite(t.half_width),
                    "estimates": len(t.estimates),
                }
                for t in self.targets
            ],
        }


def _shown(value: float, digits: int) -> str:
    """`value` with `digits` decimals, never "-0.00" (a weight of zero is not negative)."""
    return f"{round(value, digits) + 0.0:.{digits}f}"


def _finite(value: float) -> float | None:
    """JSON has no NaN or Infinity: None stands for "not measured" / "no interval"."""
    return value if math.isfinite(value) else None


def find_targets(timeline: RequestTimeline) -> list[Target]:
    """One target per upstream the request called, or per route when it called several."""
    by_upstream: dict[str, dict[str, list[float]]] = {}
    for call in timeline.calls:
        routes = by_upstream.setdefault(call.upstream, {})
        routes.setdefault(route_key(call.method, call.route), []).append(call.delay_ms)
    targets = []
    for upstream, routes in by_upstream.items():
        parts = routes.items() if len(routes) > 1 else [("", sum(routes.values(), []))]
        for route, delays in parts:
            targets.append(
                Target(
                    upstream=upstream,
                    route=route,
                    calls_per_request=len(delays),
                    delay_ms=statistics.fmean(delays),
                    min_delay_ms=min(delays),
                )
            )
    return targets


def choose_extras(targets: list[Target], baseline_s: float, extra_ms: float | None) -> None:
    """Each target's extra (and faster) delay: 40% of the path's time, 10 to 80 ms (large
    against the machine's noise: under load the slope's error is noise / extra), shrunk so
    no delayed run adds more than MAX_ADDED_MS; faster only by half its delays at most."""
    base = extra_ms if extra_ms is not None else min(max(0.4 * baseline_s * 1000, 10.0), 80.0)
    for target in targets:
        cap = MAX_ADDED_MS / max(target.calls_per_request, 1)
        target.extra_ms = max(min(base, cap), MIN_EXTRA_MS)
        # Faster by at most half its delay: an upstream made instant would put the app's
        # own work on the path instead, and the slope would read low.
        faster = min(target.extra_ms, target.min_delay_ms / 2)
        target.faster_ms = faster if faster >= target.extra_ms / 2 else 0.0


def estimates_from(runs: list[tuple[int, float, float]], targets: list[Target]) -> None:
    """Fill each target's estimates from the run log: (target index or -1 for an unchanged
    run, extra ms, latency s). A delayed run is compared with the mean of the unchanged
    runs just before and just after it."""
    for target in targets:
        target.estimates = []
        target.faster_estimates = []
    for index, (which, extra, latency) in enumerate(runs):
        if which < 0:
            continue
        before = _neighbour(runs, index, -1)
        after = _neighbour(runs, index, +1)
        around = [x for x in (before, after) if x is not None]
        if not around:
            continue
        paid_ms = (latency - statistics.fmean(around)) * 1000
        targets[which].estimates.append(paid_ms / extra)
        if extra < 0:
            targets[which].faster_estimates.append(paid_ms / extra)


def _neighbour(runs: list[tuple[int, float, float]], index: int, step: int) -> float | None:
    position = index + step
    while 0 <= position < len(runs):
        if runs[position][0] < 0:
            return runs[position][2]
        position += step
    return None


def critical_path(
    send: Send,
    upstreams: Mapping[str, Any],
    *,
    method: str,
    path: str,
    budget_s: float = 20.0,
    extra_ms: float | None = None,
    targets: list[Target] | None = None,
) -> CriticalPath:
    """Run the experiment on the path `send` sends; `upstreams` are its stub servers."""
    if not (math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s must be a finite number > 0, got {budget_s!r}")
    if extra_ms is not None and not (math.isfinite(extra_ms) and extra_ms > 0):
        raise ValueError(f"extra_ms must be a finite number > 0, got {extra_ms!r}")
    started = time.monotonic()
    deadline = started + budget_s
    send()  # warm-up: connections opened, caches filled
    runs: list[tuple[int, float, float]] = []
    timeline = None
    for _ in range(3):
        sent, answered = send()
        runs.append((-1, 0.0, answered - sent))
        timeline = request_timeline(upstreams, method, path, sent, answered)
    assert timeline is not None
    baseline = statistics.median(r[2] for r in runs)
    if targets is None:
        targets = find_targets(timeline)
        choose_extras(targets, baseline, extra_ms)
    result = CriticalPath(method, path, baseline, targets, timeline=timeline)
    round_index = 0
    while targets:
        active = [
            i
            for i, t in enumerate(targets)
            if len(t.estimates) < MIN_RUNS
            or (len(t.estimates) < MAX_RUNS and t.half_width > TARGET_HALF_WIDTH)
        ]
        if not active:
            break
        slowest = max(targets[i].extra_ms * targets[i].calls_per_request for i in active)
        round_s = len(active) * (2 * baseline + slowest / 1000)
        if time.monotonic() + round_s > deadline and round_index >= 1:
            break
        for i in active:
            target = targets[i]
            levels = target.levels()
            extra = levels[round_index % len(levels)]
            stub = upstreams[target.upstream]
            set_experiment(stub, extra_ms=extra, extra_route=target.route)
            try:
                sent, answered = send()
            finally:
                set_experiment(stub, extra_ms=0.0, extra_route="")
            runs.append((i, extra, answered - sent))
            sent, answered = send()
            runs.append((-1, 0.0, answered - sent))
        estimates_from(runs, targets)
        round_index += 1
    estimates_from(runs, targets)
    result.baseline_s = statistics.median(r[2] for r in runs if r[0] < 0)
    result.runs = len(runs) + 1
    result.elapsed_s = time.monotonic() - started
    return result
