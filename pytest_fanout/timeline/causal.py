"""Causal critical-path weights: what a small change of each upstream's delay does now.

A trace shows when calls ran, not what a faster upstream would buy. The
harness owns the upstreams, so it tries it: in each run the stubs make every
target (an upstream, or one route of it) a little faster or slower per call,
at levels -2, -1, 0, +1, +2 steps in a balanced, fixed order, and the endpoint
is timed. One least-squares fit of all the runs (with the machine's drift as a
term) gives each target's weight (ms of endpoint per ms of each of its calls:
0 off the critical path, 1 when paid once, 6 for six rounds of a semaphore),
its 95% interval (Student's t on the fit's residuals), and, from a second fit
with one slope on each side, what a faster call buys ("10 ms faster here
saves") apart from what a slower one costs; a third fit splits the slope
within one step from what the second step adds. When the sides or the sizes
differ, the path bends there (two branches nearly tied, a slack used up),
which the table says.

The steps are small and local: sized to the noise of the unchanged runs, per
call divided by the rounds the target is paid in (a 30-call route behind
Semaphore(5) is paid 6 times, not 30), never more than a share of the
target's own delay, of its slack (how much slower a call may get before the
endpoint notices: from the timeline, how long after the call's end a sibling
beside it ran on, up to the next call's start) or of its margin over a sibling it runs beside.
Every target changes in every run, so the runs all count for every weight:
the whole experiment costs 15 requests (20 from 5 targets, 25 from 7), and
one control call per stub whose delays change.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_fanout.artifacts import render_text
from pytest_fanout.servers.calllog import route_key
from pytest_fanout.timeline.calls import Call, RequestTimeline, request_timeline, set_experiment
from pytest_fanout.timeline.groups import app_alone

#: Unchanged runs before the experiment (the baseline and its noise), after the warm-up.
WARM_UP_RUNS = 2
BASELINE_RUNS = 4
#: A run whose residual is over this many robust sd of the others is dropped from the
#: fit (a hiccup of the machine, not the experiment), one in ten at most.
OUTLIER_SD = 4.0
#: Changed runs: at least this many, and enough for 4 degrees of freedom of the fit.
MIN_DESIGN_RUNS = 10
#: The levels each target takes in turn, in steps (equally often).
LEVELS = (-2, -1, 0, 1, 2)
#: A step changes the endpoint by about this many noise standard deviations (per round)...
NOISE_STEPS = 4.0
#: ...at least this (ms), and at most this share of the endpoint's time.
MIN_STEP_MS = 15.0
MAX_STEP_SHARE = 0.5
#: Two steps stay within these shares of the target's smallest delay (faster), its
#: slack (slower, off the path) and its margin over a sibling (faster, on the path).
DELAY_SHARE = 0.5
SLACK_SHARE = 0.3
#: Steps are whole milliseconds, at least one: the stub's loop (uvloop, on libuv) times
#: its sleeps in whole ms, so a step of 1.5 ms ran as 1 or 2 and the fit, told 1.5, read a
#: weight of 6 as 5.3 or 7 on a quiet machine (8 of 97 intervals missed it).
MIN_CALL_STEP_MS = 1.0
#: A step per call is at least this (ms) where its bounds allow: below it, the app's own
#: loop work between rounds absorbs part of the change (a 30-call Semaphore(5) route
#: read 5 for 6 with 2.5 ms a call on a busy machine).
FLOOR_CALL_STEP_MS = 5.0
#: A target whose calls leave this much time (ms) before the next call starts, and whose
#: weight reads under 0.5, is off the critical path.
OFF_PATH_MS = 2.0
#: The two sides' slopes differ by more than this (and 3 standard errors): a bend.
BEND = 0.5
#: z of a two-sided 95% interval; 1.4826 x MAD estimates a standard deviation.
_Z95 = 1.959964
_MAD_TO_SD = 1.4826
#: Student's t, two-sided 95%, for 1..30 degrees of freedom.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

#: Sends the request once; returns (sent, answered) on time.monotonic().
Send = Callable[[], tuple[float, float]]
#: Told one line per step of the experiment (the command prints it; None: silent).
Progress = Callable[[str], None]


def t95(df: int) -> float:
    """Student's t quantile of a two-sided 95% interval (inf without a degree of freedom)."""
    if df < 1:
        return math.inf
    return _T95[df - 1] if df <= len(_T95) else _Z95 + 2.4 / df


@dataclass
class Target:
    """What one experiment changes: an upstream, or one route of it."""

    upstream: str
    #: "GET /stock/{sku}", or "" for every call of the upstream.
    route: str
    calls_per_request: int
    #: The mean delay the stub applies to its calls (ms), and the smallest.
    delay_ms: float
    min_delay_ms: float
    #: The rounds the request pays it in (calls in flight together are one round).
    rounds: int = 1
    #: From the timeline: how much slower its calls may get before the next call that
    #: starts after them (ms; ~0 on the path), and how much faster before a sibling that
    #: runs beside it ends last (ms; inf without one).
    gap_ms: float = 0.0
    margin_ms: float = math.inf
    #: One step per call of the slower and the faster runs (ms; 0: not run that way).
    extra_ms: float = 0.0
    faster_ms: float = 0.0
    #: The fit: the weight, its 95% half width, each side's slope and standard error.
    weight: float = math.nan
    half_width: float = math.inf
    slower: float = math.nan
    faster: float = math.nan
    faster_half_width: float = math.inf
    #: The slope within one step of the current delays, and what the second step adds:
    #: they differ past a bend (a slack used up, a sibling overtaken).
    near: float = math.nan
    far: float = math.nan
    bend: bool = False
    #: Runs that changed it.
    changed_runs: int = 0

    @property
    def off_path(self) -> bool:
        """Its calls leave time before the next one starts (the timeline), and the
        experiment does not say otherwise (the weight's interval reaches under 0.5)."""
        if self.gap_ms < OFF_PATH_MS or not math.isfinite(self.weight):
            return False
        return self.weight - self.half_width < 0.5

    @property
    def slack_ms(self) -> float:
        """How much slower each call may get before the endpoint pays (0 on the path): how
        long a sibling beside it ran on (up to the next call's start), exact when what
        follows needs them both (a join after a gather), a lower bound when it does not."""
        return self.gap_ms if self.off_path else 0.0

    @property
    def saves_per_10ms(self) -> float:
        """What 10 ms off each of its calls saves (ms), from the faster runs only (nan off
        the path, or when it could not be made faster)."""
        if self.off_path or self.faster_ms <= 0:
            return math.nan
        return 10 * self.faster

    def level_ms(self, level: int) -> float:
        """The change per call (ms) at `level` steps."""
        return level * (self.extra_ms if level > 0 else self.faster_ms)

    @property
    def label(self) -> str:
        return f"{self.upstream} {self.route}" if self.route else self.upstream


@dataclass
class CriticalPath:
    """The weights of every upstream (and route) on one path's latency."""

    method: str
    path: str
    #: The median of the unchanged runs (s), and their noise (robust sd, s).
    baseline_s: float
    targets: list[Target]
    #: Runs sent and seconds spent on the whole experiment.
    runs: int = 0
    elapsed_s: float = 0.0
    #: The request's unchanged timeline (from the baseline).
    timeline: RequestTimeline | None = None
    noise_s: float = 0.0

    @property
    def weights(self) -> dict[str, float]:
        """{upstream: how many times the path pays its delay}, summed over its routes."""
        out: dict[str, float] = {}
        for t in self.targets:
            out[t.upstream] = out.get(t.upstream, 0.0) + t.weight
        return out

    @property
    def slack(self) -> dict[str, float]:
        """{upstream: ms its calls may get slower before the path pays}: 0 on the path."""
        out: dict[str, float] = {}
        for t in self.targets:
            out[t.upstream] = min(out.get(t.upstream, math.inf), t.slack_ms)
        return out

    @property
    def route_weights(self) -> dict[tuple[str, str], float]:
        """{(upstream, route): weight}; route "" when the upstream was changed as a whole."""
        return {(t.upstream, t.route): t.weight for t in self.targets}

    @property
    def own_s(self) -> float:
        """The app's own time on the path: in the unchanged request's timeline, the time
        no upstream call was in flight (the waterfall's "the app alone", one computation).
        Without a timeline, the baseline minus each weight x its delay (never below 0: a
        figure of noisy weights, so the timeline's is the one shown when there is one)."""
        if self.timeline is not None:
            return sum(
                end - start
                for start, end in app_alone(self.timeline.calls, self.timeline.duration_s)
            )
        paid = sum(t.weight * t.delay_ms / 1000 for t in self.targets if math.isfinite(t.weight))
        return max(self.baseline_s - paid, 0.0)

    def rows(self) -> list[list[Any]]:
        return [
            [
                t.upstream,
                t.route or "(all)",
                t.calls_per_request,
                t.rounds,
                f"{t.delay_ms:.0f} ms",
                _shown(t.weight, 2),
                f">= {t.slack_ms:.0f} ms" if t.off_path else "0",
                _saves(t),
                f"+/-{t.half_width:.2f} ({t.changed_runs} runs)",
                _note(t),
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
            "rounds",
            "delay",
            "weight",
            "slack",
            "10 ms faster here saves",
            "95% interval",
            "note",
        ]
        return head + "\n" + render_text(headers, self.rows())

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "baseline_s": self.baseline_s,
            "noise_s": self.noise_s,
            "own_s": self.own_s,
            "runs": self.runs,
            "elapsed_s": self.elapsed_s,
            "targets": [
                {
                    "upstream": t.upstream,
                    "route": t.route,
                    "calls_per_request": t.calls_per_request,
                    "rounds": t.rounds,
                    "delay_ms": t.delay_ms,
                    "extra_ms": t.extra_ms,
                    "faster_ms": t.faster_ms,
                    "weight": _finite(t.weight),
                    "saves_per_10ms": _finite(t.saves_per_10ms),
                    "half_width": _finite(t.half_width),
                    "slack_ms": t.slack_ms,
                    "slower": _finite(t.slower),
                    "faster": _finite(t.faster),
                    "near": _finite(t.near),
                    "far": _finite(t.far),
                    "bend": t.bend,
                    "estimates": t.changed_runs,
                }
                for t in self.targets
            ],
        }


def _saves(t: Target) -> str:
    """What 10 ms faster saves, with its interval (a small faster step is imprecise:
    the interval says so rather than the figure alone); "-" off the path."""
    if not math.isfinite(t.saves_per_10ms):
        return "-"
    half = 10 * t.faster_half_width
    return f"{_shown(t.saves_per_10ms, 0)} ms" + (f" +/-{half:.0f}" if math.isfinite(half) else "")


def _note(t: Target) -> str:
    if not math.isfinite(t.weight):
        return "not measured"
    if t.off_path:
        return f"off the path: at least {t.slack_ms:.0f} ms slower before it matters"
    if t.bend:
        return (
            f"bend: faster {_shown(t.faster, 1)}, slower {_shown(t.slower, 1)}; one step"
            f" {_shown(t.near, 1)}, the second {_shown(t.far, 1)}"
        )
    return ""


def _shown(value: float, digits: int) -> str:
    """`value` with `digits` decimals, never "-0.00" (a weight of zero is not negative)."""
    if not math.isfinite(value):
        return "-"
    return f"{round(value, digits) + 0.0:.{digits}f}"


def _finite(value: float) -> float | None:
    """JSON has no NaN or Infinity: None stands for "not measured" / "no interval"."""
    return value if math.isfinite(value) else None


# ---- the timeline: targets, rounds, gaps and margins ---------------------------------------


def _target_key(call: Call, split: set[str]) -> tuple[str, str]:
    return (call.upstream, route_key(call.method, call.route) if call.upstream in split else "")


def find_targets(timeline: RequestTimeline) -> list[Target]:
    """One target per upstream the request called, or per route when it called several."""
    by_upstream: dict[str, dict[str, list[Call]]] = {}
    for call in timeline.calls:
        routes = by_upstream.setdefault(call.upstream, {})
        routes.setdefault(route_key(call.method, call.route), []).append(call)
    targets = []
    for upstream, routes in by_upstream.items():
        parts = routes.items() if len(routes) > 1 else [("", sum(routes.values(), []))]
        for route, calls in parts:
            # A call refused at once (a rate limit's or a cap's 429) had no delay to change:
            # the delay is the answered calls' (a 20 ms upstream read 10 ms with its 429s).
            delays = [c.delay_ms for c in calls if not _refused(c)] or [c.delay_ms for c in calls]
            targets.append(
                Target(
                    upstream=upstream,
                    route=route,
                    calls_per_request=len(calls),
                    delay_ms=statistics.fmean(delays),
                    min_delay_ms=min(delays),
                )
            )
    return targets


def _refused(call: Call) -> bool:
    """Answered 429 at once, before any delay (a rate limit or max_inflight)."""
    return call.status == 429 and call.delay_ms == 0


def count_rounds(calls: Sequence[Call]) -> int:
    """The rounds `calls` ran in: a call that starts after one of the current round's
    calls has ended begins a new round (30 calls behind Semaphore(5): 6 rounds)."""
    count, first_end = 0, -math.inf
    for call in sorted(calls, key=lambda c: c.start_s):
        if call.start_s >= first_end:
            count, first_end = count + 1, call.end_s
        else:
            first_end = min(first_end, call.end_s)
    return count


def shape_targets(targets: list[Target], timelines: Sequence[RequestTimeline]) -> None:
    """Each target's rounds, gap (slack) and margin, the median over `timelines` (one
    late answer on a busy machine is not the structure)."""
    split = {t.upstream for t in targets if t.route}
    for target in targets:
        key = (target.upstream, target.route)
        gaps, margins, rounds = [], [], []
        for timeline in timelines:
            mine = [c for c in timeline.calls if _target_key(c, split) == key]
            if not mine:
                continue
            rounds.append(count_rounds(mine))
            gaps.append(min(_gap(c, timeline) for c in mine))
            margins.append(min(_margin(c, timeline, split, key) for c in mine))
        target.rounds = max(statistics.median_low(rounds), 1) if rounds else 1
        target.gap_ms = statistics.median(gaps) * 1000 if gaps else 0.0
        target.margin_ms = statistics.median(margins) * 1000 if margins else math.inf


def _gap(call: Call, timeline: RequestTimeline) -> float:
    """How long after the call's end the request still waited for another call in
    flight then (a sibling beside it), up to the next call that starts; 0 when no call
    was in flight as it ended (what follows is the app's own work on its answer, not
    slack) or no call follows (the app answers after it)."""
    later = [c.start_s for c in timeline.calls if c.start_s >= call.end_s]
    beside = [c.end_s for c in timeline.calls if c is not call and c.start_s < call.end_s < c.end_s]
    if not later or not beside:
        return 0.0
    return max(min(min(later), max(beside)) - call.end_s, 0.0)


def _margin(call: Call, timeline: RequestTimeline, split: set[str], key: Any) -> float:
    """How much earlier the call may end before the path changes: before a sibling
    running beside it (another target's call that overlaps it and ends before it) ends
    last instead, or before it answers while the app still starts calls of its own
    round (a gather of 20 whose first answer came before the last call went out would
    put the app's own loop on the path)."""
    ends = [
        c.end_s
        for c in timeline.calls
        if _target_key(c, split) != key
        and c.start_s < call.end_s
        and c.end_s > call.start_s
        and c.end_s <= call.end_s
    ]
    sibling = call.end_s - max(ends) if ends else math.inf
    starts = [
        c.start_s
        for c in timeline.calls
        if _target_key(c, split) == key and call.start_s <= c.start_s < call.end_s
    ]
    return min(sibling, call.end_s - max(starts))


def choose_steps(
    targets: list[Target], baseline_ms: float, noise_ms: float, extra_ms: float | None = None
) -> None:
    """Each target's step per call, both ways: the endpoint moves by about NOISE_STEPS
    noise sd per step (at least MIN_STEP_MS, at most MAX_STEP_SHARE of its time), divided
    by the rounds it is paid in (at least FLOOR_CALL_STEP_MS a call where that stays under
    MAX_STEP_SHARE); two steps stay inside its delay, slack and margin.
    `extra_ms` fixes the step per call instead (still kept inside those)."""
    per_request = min(max(NOISE_STEPS * noise_ms, MIN_STEP_MS), MAX_STEP_SHARE * baseline_ms)
    for t in targets:
        step = per_request / t.rounds
        if step < FLOOR_CALL_STEP_MS:  # but never past half the endpoint's time a step
            step = min(FLOOR_CALL_STEP_MS, MAX_STEP_SHARE * baseline_ms / t.rounds)
        step = max(extra_ms, MIN_CALL_STEP_MS) if extra_ms is not None else step
        slower = step
        if t.gap_ms >= max(OFF_PATH_MS, 2 * noise_ms):  # not the app's own time, jittered
            slower = min(slower, SLACK_SHARE * t.gap_ms / 2)
        faster = min(step, DELAY_SHARE * t.min_delay_ms / 2, SLACK_SHARE * t.margin_ms / 2)
        t.extra_ms = float(math.floor(slower)) if slower >= MIN_CALL_STEP_MS else 0.0
        t.faster_ms = float(math.floor(faster)) if faster >= MIN_CALL_STEP_MS else 0.0


def design(count: int, runs: int) -> list[list[int]]:
    """`runs` rows of `count` levels: each target takes every level of LEVELS equally
    often, in an order of its own (fixed: the same experiment every time)."""
    rows = [[0] * count for _ in range(runs)]
    for column in range(count):
        levels = [LEVELS[i % len(LEVELS)] for i in range(runs)]
        random.Random(1009 * column + runs).shuffle(levels)
        for row, level in zip(rows, levels, strict=True):
            row[column] = level
    return rows


def design_runs(count: int) -> int:
    """Changed runs for `count` targets: 2 slopes each, an intercept, the drift, and 4
    degrees of freedom left (with the unchanged runs); a multiple of the levels."""
    need = max(MIN_DESIGN_RUNS, 2 * count + 6 - BASELINE_RUNS)
    return len(LEVELS) * math.ceil(need / len(LEVELS))


# ---- the fit -------------------------------------------------------------------------------


def least_squares(
    rows: Sequence[Sequence[float]], ys: Sequence[float]
) -> tuple[list[float], list[float], int]:
    """Coefficients, their standard errors and the residual degrees of freedom of
    y ~ X (columns that are all zero get coefficient nan)."""
    p = len(rows[0])
    used = [j for j in range(p) if any(r[j] for r in rows)]
    x = [[r[j] for j in used] for r in rows]
    k, n = len(used), len(rows)
    xtx = [[sum(r[a] * r[b] for r in x) for b in range(k)] for a in range(k)]
    xty = [sum(r[a] * y for r, y in zip(x, ys, strict=True)) for a in range(k)]
    inverse = _invert(xtx)
    coef = [sum(inverse[a][b] * xty[b] for b in range(k)) for a in range(k)]
    df = n - k
    fitted = [sum(c * v for c, v in zip(coef, r, strict=True)) for r in x]
    rss = sum((y - f) ** 2 for y, f in zip(ys, fitted, strict=True))
    s2 = rss / df if df > 0 else math.inf
    ses = [math.sqrt(max(s2 * inverse[a][a], 0.0)) for a in range(k)]
    out_coef, out_se = [math.nan] * p, [math.inf] * p
    for a, j in enumerate(used):
        out_coef[j], out_se[j] = coef[a], ses[a]
    return out_coef, out_se, df


def _invert(matrix: list[list[float]]) -> list[list[float]]:
    """Gauss-Jordan with partial pivoting; a singular matrix raises ValueError."""
    k = len(matrix)
    a = [row[:] + [1.0 if i == j else 0.0 for j in range(k)] for i, row in enumerate(matrix)]
    for col in range(k):
        pivot = max(range(col, k), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            raise ValueError("the experiment's runs cannot tell the targets apart")
        a[col], a[pivot] = a[pivot], a[col]
        factor = a[col][col]
        a[col] = [v / factor for v in a[col]]
        for r in range(k):
            if r != col and a[r][col]:
                f = a[r][col]
                a[r] = [v - f * w for v, w in zip(a[r], a[col], strict=True)]
    return [row[k:] for row in a]


def fit(targets: list[Target], runs: Sequence[tuple[Sequence[float], float]]) -> None:
    """Each target's weight (one slope), its two sides' slopes (a second fit) and its
    slope within one step and past it (a third), from runs of (change per call of each
    target in ms, latency in ms); the run's index is a term, so a machine that drifts
    does not bias the weights; a hiccup far off the fit is left out (`steady`)."""
    n = len(runs)
    if n < 2:
        return
    drift = [(i - (n - 1) / 2) / n for i in range(n)]
    keep = steady([[1.0, drift[i], *changes] for i, (changes, _) in enumerate(runs)], runs)
    runs = [runs[i] for i in keep]
    drift = [drift[i] for i in keep]
    ys = [latency for _, latency in runs]
    one = [[1.0, drift[i], *changes] for i, (changes, _) in enumerate(runs)]
    two = [
        [1.0, drift[i], *[v for c in changes for v in (min(c, 0.0), max(c, 0.0))]]
        for i, (changes, _) in enumerate(runs)
    ]
    three = [
        [1.0, drift[i], *[v for t, c in zip(targets, changes, strict=True) for v in _sizes(t, c)]]
        for i, (changes, _) in enumerate(runs)
    ]
    try:
        coef, se, df = _honest_fit(one, ys)
    except ValueError:
        return
    # The sides and the sizes need more of the design than the weight: a budget spent after
    # a few runs (each at -2 steps, say) cannot split them, and leaves the weight standing.
    coef2, se2, df2 = _fit_or_nothing(two, ys)
    coef3, se3, _ = _fit_or_nothing(three, ys)
    for i, t in enumerate(targets):
        t.changed_runs = sum(1 for changes, _ in runs if changes[i])
        t.weight, t.half_width = coef[2 + i], t95(df) * se[2 + i]
        t.faster, t.slower = coef2[2 + 2 * i], coef2[3 + 2 * i]
        t.faster_half_width = t95(df2) * se2[2 + 2 * i]
        both = math.isfinite(t.faster) and math.isfinite(t.slower)
        spread = math.hypot(se2[2 + 2 * i], se2[3 + 2 * i])
        sides = both and abs(t.slower - t.faster) > max(BEND, 3 * spread)
        near, far = coef3[2 + 2 * i], coef3[3 + 2 * i]
        spread = math.hypot(se3[2 + 2 * i], se3[3 + 2 * i])
        sizes = math.isfinite(near) and math.isfinite(far)
        t.near, t.far = near, far
        t.bend = sides or (sizes and abs(far - near) > max(BEND, 3 * spread))
        if not math.isfinite(t.weight):
            t.half_width = math.inf


def _honest_fit(rows: list[list[float]], ys: list[float]) -> tuple[list[float], list[float], int]:
    """`least_squares` with each standard error at least the jackknife's."""
    coef, se, df = least_squares(rows, ys)
    return coef, [max(a, b) for a, b in zip(se, jackknife(rows, ys), strict=True)], df


def _fit_or_nothing(
    rows: list[list[float]], ys: list[float]
) -> tuple[list[float], list[float], int]:
    """`_honest_fit`, or nan coefficients (not measured) when the runs cannot tell the
    columns apart."""
    try:
        return _honest_fit(rows, ys)
    except ValueError:
        p = len(rows[0])
        return [math.nan] * p, [math.inf] * p, 0


def jackknife(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Delete-one jackknife standard errors of the coefficients: honest where the
    noise is not the same in every run (a busy machine), or the line bends a little."""
    n, p = len(rows), len(rows[0])
    fits = []
    for drop in range(n):
        try:
            coef, _, df = least_squares(rows[:drop] + rows[drop + 1 :], ys[:drop] + ys[drop + 1 :])
        except ValueError:
            return [0.0] * p  # a run the fit cannot do without: the t interval alone
        if df < 1:
            return [0.0] * p
        fits.append(coef)
    out = []
    for j in range(p):
        values = [f[j] for f in fits if math.isfinite(f[j])]
        if len(values) < 2:
            out.append(0.0)
            continue
        centre = statistics.fmean(values)
        out.append(math.sqrt((n - 1) / n * sum((v - centre) ** 2 for v in values)))
    return out


def steady(rows: list[list[float]], runs: Sequence[tuple[Sequence[float], float]]) -> list[int]:
    """The runs to fit: all but those whose residual from a first fit is over
    OUTLIER_SD robust sd of the residuals (the largest first, one in ten at most, and
    never below 3 degrees of freedom)."""
    everything = list(range(len(runs)))
    ys = [latency for _, latency in runs]
    try:
        coef, _, df = least_squares(rows, ys)
    except ValueError:
        return everything
    fitted = [sum(c * v for c, v in zip(coef, r, strict=True) if math.isfinite(c)) for r in rows]
    residuals = [y - f for y, f in zip(ys, fitted, strict=True)]
    spread = _MAD_TO_SD * statistics.median(abs(r) for r in residuals)
    if spread < 1e-6:  # an exact fit (a simulation): nothing stands out
        return everything
    worst = sorted(everything, key=lambda i: -abs(residuals[i]))
    out = [i for i in worst if abs(residuals[i]) > OUTLIER_SD * spread]
    out = out[: min(len(runs) // 10, max(df - 3, 0))]
    return [i for i in everything if i not in out]


def _sizes(target: Target, change: float) -> tuple[float, float]:
    """A change split into its first step and what the second step adds (ms)."""
    step = target.extra_ms if change > 0 else target.faster_ms
    near = max(min(change, step), -step)
    return near, change - near


# ---- the experiment ------------------------------------------------------------------------


def _apply(
    upstreams: Mapping[str, Any],
    targets: list[Target],
    changes: Sequence[float],
    last: dict[str, dict[str, Any]],
) -> None:
    """Set every stub's per-call changes: one control call per stub whose changes differ
    from `last` (what each stub was told before; updated)."""
    settings: dict[str, dict[str, Any]] = {}
    for target, change in zip(targets, changes, strict=True):
        mine = settings.setdefault(target.upstream, {"extra_ms": 0.0, "extra_routes": {}})
        if target.route:
            mine["extra_routes"][target.route] = change
        else:
            mine["extra_ms"] = change
    for upstream, knobs in settings.items():
        if last.get(upstream) != knobs:
            set_experiment(upstreams[upstream], extra_route="", **knobs)
            last[upstream] = knobs


def critical_path(
    send: Send,
    upstreams: Mapping[str, Any],
    *,
    method: str,
    path: str,
    budget_s: float = 20.0,
    extra_ms: float | None = None,
    targets: list[Target] | None = None,
    progress: Progress | None = None,
) -> CriticalPath:
    """Run the experiment on the path `send` sends; `upstreams` are its stub servers;
    `progress` is told each target and each run as it goes."""
    if not (math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s must be a finite number > 0, got {budget_s!r}")
    if extra_ms is not None and not (math.isfinite(extra_ms) and extra_ms > 0):
        raise ValueError(f"extra_ms must be a finite number > 0, got {extra_ms!r}")
    say = progress or (lambda line: None)
    started = time.monotonic()
    deadline = started + budget_s
    for _ in range(WARM_UP_RUNS):
        send()  # connections opened, caches filled, the app's first-time work done
    windows = [send() for _ in range(BASELINE_RUNS)]
    latencies = [(answered - sent) * 1000 for sent, answered in windows]
    baseline_ms = statistics.median(latencies)
    spread = statistics.median(abs(x - baseline_ms) for x in latencies)
    noise_ms = max(_MAD_TO_SD * spread, 0.1)
    timelines = [request_timeline(upstreams, method, path, s, a) for s, a in windows]
    median = sorted(range(len(latencies)), key=latencies.__getitem__)[(len(latencies) - 1) // 2]
    if targets is None:
        targets = find_targets(timelines[median])
        shape_targets(targets, timelines)
        choose_steps(targets, baseline_ms, noise_ms, extra_ms)
    result = CriticalPath(method, path, baseline_ms / 1000, targets, timeline=timelines[median])
    result.noise_s = noise_ms / 1000
    # No upstream call: nothing to change, the unchanged runs say it all.
    rows = design(len(targets), design_runs(len(targets))) if targets else []
    say(
        f"critical path of {method} {path}: {baseline_ms:.0f} ms, noise {noise_ms:.1f} ms; "
        f"{len(targets)} target(s), {len(rows)} runs"
    )
    for t in targets:
        say(
            f"  {t.label}: {t.calls_per_request} call(s) in {t.rounds} round(s); step per call "
            f"+{t.extra_ms:g} / -{t.faster_ms:g} ms"
        )
    runs: list[tuple[Sequence[float], float]] = [([0.0] * len(targets), x) for x in latencies]
    told: dict[str, dict[str, Any]] = {}
    try:
        for index, row in enumerate(rows):
            pairs = list(zip(targets, row, strict=True))
            changes = [t.level_ms(level) for t, level in pairs]
            added_s = sum(max(t.level_ms(level), 0.0) * t.rounds for t, level in pairs) / 1000
            if index and time.monotonic() + baseline_ms / 1000 + added_s > deadline:
                say(f"  budget of {budget_s:g} s spent after {index} runs")
                break
            if targets:
                _apply(upstreams, targets, changes, told)
            sent, answered = send()
            runs.append((changes, (answered - sent) * 1000))
            named = zip(targets, changes, strict=True)
            moved = ", ".join(f"{t.label} {c:+g}" for t, c in named if c)
            say(f"  run {index + 1}/{len(rows)}: {moved or 'unchanged'}: {runs[-1][1]:.1f} ms")
    finally:
        if targets:
            _apply(upstreams, targets, [0.0] * len(targets), {})
    fit(targets, runs)
    result.runs = len(runs) + WARM_UP_RUNS
    result.elapsed_s = time.monotonic() - started
    return result
