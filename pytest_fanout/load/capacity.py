"""The capacity search: the highest arrival rate at which a path still meets its SLO.

Pure logic over a `step(rate) -> StepResult` function (the `fanout capacity`
command's step is one open-model Locust run; the unit tests pass a fake):

1. step the rate up by `factor` from `start_rps` until a step breaks the SLO
   (or `max_rps` passes), stepping down instead if the first step breaks it;
2. narrow down by bisection between the highest rate that passed and the
   lowest that failed, until they are within `precision` of each other;
3. never start a step the remaining budget cannot pay for (its cost is
   estimated from the steps so far, `step_cost_s` before the first).

A step breaks the SLO when its p95 (exact, from each request's intended
start) is over the limit, too many requests failed, too many starts were
dropped (no free user in time), or the load generator could not even start
the requests at the asked rate (then the figure would be about the
generator, not the service).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CapacityResult",
    "SearchSettings",
    "Slo",
    "StepResult",
    "search",
]


@dataclass(frozen=True)
class Slo:
    """What a rate must meet: p95 latency, failure ratio, dropped starts, rate achieved."""

    p95_ms: float
    max_fail_ratio: float = 0.01
    max_dropped_ratio: float = 0.01
    #: The share of the asked rate the generator must have started.
    min_achieved: float = 0.95

    def broken_by(self, step: StepResult) -> str | None:
        """Why `step` breaks the SLO (the first reason, one phrase), or None if it meets it."""
        if step.requests == 0:
            return "no request was answered"
        if step.dropped_ratio > self.max_dropped_ratio:
            return (
                f"{step.dropped_ratio:.1%} of starts dropped (no free user in time) "
                f"> {self.max_dropped_ratio:.1%}"
            )
        if step.fail_ratio > self.max_fail_ratio:
            return f"failure ratio {step.fail_ratio:.3g} > {self.max_fail_ratio:g}"
        if step.p95_ms > self.p95_ms:
            return f"p95 {step.p95_ms:.0f} ms > {self.p95_ms:g} ms"
        if step.achieved_rps < self.min_achieved * step.rate:
            return (
                f"the generator started only {step.achieved_rps:.1f}/s "
                f"(< {self.min_achieved:.0%} of {step.rate:g}/s)"
            )
        return None


@dataclass(frozen=True)
class StepResult:
    """One step: a steady run at one arrival rate."""

    rate: float
    achieved_rps: float
    p95_ms: float
    requests: int
    failures: int = 0
    dropped_ratio: float = 0.0
    p99_ms: float = 0.0
    #: Filled in by `search`: whether it met the SLO and, if not, why.
    ok: bool = False
    reason: str = ""

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fail_ratio"] = round(self.fail_ratio, 6)
        for key in ("rate", "achieved_rps", "p95_ms", "p99_ms", "dropped_ratio"):
            data[key] = round(data[key], 3)
        return data


@dataclass(frozen=True)
class SearchSettings:
    start_rps: float = 5.0
    factor: float = 2.0
    #: Bisection stops once (lowest failing - highest passing) <= precision x highest passing.
    precision: float = 0.1
    max_rps: float = 5000.0
    #: What one step is expected to cost before any has run (run time + start-up).
    step_cost_s: float = 8.0
    #: Stepping down stops below this rate (the path cannot meet the SLO at all).
    min_rps: float = 0.5


@dataclass
class CapacityResult:
    """The search's outcome for one path."""

    path: str
    slo: Slo
    steps: list[StepResult] = field(default_factory=list)
    #: Why the search ended before it was precise (the budget, max_rps), or "".
    stopped_early: str = ""

    @property
    def passed(self) -> list[StepResult]:
        return [s for s in self.steps if s.ok]

    @property
    def capacity(self) -> StepResult | None:
        """The highest rate that met the SLO (None: not even the lowest step did)."""
        return max(self.passed, key=lambda s: s.rate, default=None)

    @property
    def first_failure(self) -> StepResult | None:
        """The lowest rate that broke the SLO above the capacity (None: none broke it)."""
        floor = self.capacity.rate if self.capacity else 0.0
        failed = [s for s in self.steps if not s.ok and s.rate > floor]
        return min(failed, key=lambda s: s.rate, default=None)

    @property
    def capacity_rps(self) -> float | None:
        return self.capacity.rate if self.capacity else None

    def to_dict(self) -> dict[str, Any]:
        capacity, failure = self.capacity, self.first_failure
        return {
            "path": self.path,
            "capacity_rps": capacity.rate if capacity else None,
            "p95_ms": round(capacity.p95_ms, 3) if capacity else None,
            "first_failed_rps": failure.rate if failure else None,
            "why": failure.reason if failure else "",
            "stopped_early": self.stopped_early,
            "slo": asdict(self.slo),
            "steps": [s.to_dict() for s in self.steps],
        }


def _round_rate(rate: float) -> float:
    """Rates on a readable grid: 3 significant figures."""
    if rate <= 0:
        return 0.0
    digits = 2 - int(math.floor(math.log10(rate)))
    return round(rate, max(digits, 0)) if digits > 0 else float(round(rate, digits))


def search(
    path: str,
    step: Callable[[float], StepResult],
    slo: Slo,
    budget_s: float,
    settings: SearchSettings = SearchSettings(),  # noqa: B008 (frozen, shared safely)
    *,
    clock: Callable[[], float] = time.monotonic,
) -> CapacityResult:
    """Step up until the SLO breaks, then bisect; every step paid for out of `budget_s`."""
    result = CapacityResult(path, slo)
    deadline = clock() + budget_s
    costs: list[float] = []

    def affordable() -> bool:
        expected = max(costs) if costs else settings.step_cost_s
        return deadline - clock() >= expected

    def run(rate: float) -> bool:
        began = clock()
        measured = step(rate)
        costs.append(clock() - began)
        reason = slo.broken_by(measured)
        checked = StepResult(
            **{**asdict(measured), "rate": rate, "ok": reason is None, "reason": reason or ""}
        )
        result.steps.append(checked)
        return checked.ok

    low: float | None = None  # highest rate that passed
    high: float | None = None  # lowest rate that failed
    rate = _round_rate(min(settings.start_rps, settings.max_rps))
    # 1. Up (or down, when the first step already fails) by `factor`.
    while affordable():
        if run(rate):
            low = rate
            if high is not None or rate >= settings.max_rps:
                break
            rate = _round_rate(min(rate * settings.factor, settings.max_rps))
            if rate <= low:
                break
        else:
            high = rate
            if low is not None:
                break
            rate = _round_rate(rate / settings.factor)
            if rate < settings.min_rps:
                break
    # 2. Bisection between the two.
    while low is not None and high is not None and high - low > settings.precision * low:
        if not affordable():
            break
        middle = _round_rate((low + high) / 2)
        if middle in (low, high):
            break
        if run(middle):
            low = middle
        else:
            high = middle
    if not affordable() and not _settled(low, high, settings):
        result.stopped_early = "budget"
    elif low is not None and high is None and low >= settings.max_rps:
        result.stopped_early = f"max rate {settings.max_rps:g}/s met the SLO"
    return result


def _settled(low: float | None, high: float | None, settings: SearchSettings) -> bool:
    if low is None or high is None:
        return False
    return high - low <= settings.precision * low
