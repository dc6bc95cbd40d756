"""What a fail-on rule can name: each metric, how it is read from a case, which way is better.

Why apart from the rules: a metric turns a case's record into per-sample
values (for the noise test) and one headline number; the rule syntax and the
verdict only need that shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_fanout.gate_runs import Case, Run
from pytest_fanout.measure import Measurement


@dataclass(frozen=True)
class Values:
    """A metric of one case: per-sample values (for the test) and the headline statistic."""

    samples: list[float]
    stat: float


@dataclass(frozen=True)
class Metric:
    """What a rule can name: how to read it from a case, and which way is better."""

    name: str
    higher_is_better: bool
    #: "ratio" (plain number) or "s" (seconds): which absolute units a rule may use.
    unit: str
    portable: bool
    read: Callable[[Case, Run], Values | None]
    about: str

    @property
    def bad_sign(self) -> str:
        return "-" if self.higher_is_better else "+"


def _measured(case: Case) -> Measurement | None:
    m = case.measurement()
    return m if m is not None and m.samples else None


def _efficiency(case: Case, run: Run) -> Values | None:
    m = _measured(case)
    if m is None or m.ideal_s is None or any(s <= 0 for s in m.samples):
        return None
    ideal = m.ideal_s
    return Values([ideal / s for s in m.samples], ideal / m.median_s)


def _overhead(case: Case, run: Run) -> Values | None:
    m = _measured(case)
    if m is None or m.ideal_s is None or not m.n:
        return None
    ideal, n = m.ideal_s, m.n
    return Values([(s - ideal) / n for s in m.samples], (m.median_s - ideal) / n)


def _median(case: Case, run: Run) -> Values | None:
    m = _measured(case)
    return None if m is None else Values(list(m.samples), m.median_s)


def _p95(case: Case, run: Run) -> Values | None:
    m = _measured(case)
    return None if m is None else Values(list(m.samples), m.p95_s)


def _speedup(case: Case, run: Run) -> Values | None:
    """Median of the same test's sequential path (concurrency 1, same n) over this case's."""
    m = _measured(case)
    if m is None or not m.n or m.concurrency in (None, 1):
        return None
    for other in run.cases:
        ref = _measured(other) if other is not case else None
        if ref is not None and ref.test == m.test and ref.n == m.n and ref.concurrency == 1:
            if any(s <= 0 for s in m.samples):
                return None
            return Values([ref.median_s / s for s in m.samples], ref.median_s / m.median_s)
    return None


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "efficiency",
            True,
            "ratio",
            True,
            _efficiency,
            "ideal time / measured time (1.0 = perfect fan-out)",
        ),
        Metric(
            "overhead",
            False,
            "s",
            True,
            _overhead,
            "(median - ideal) / n: the app's own cost per upstream call",
        ),
        Metric(
            "speedup",
            True,
            "ratio",
            True,
            _speedup,
            "same test's sequential median / this median, measured in the same run",
        ),
        Metric("median", False, "s", False, _median, "median wall time (raw seconds)"),
        Metric("p95", False, "s", False, _p95, "95th percentile wall time (raw seconds)"),
    )
}
