"""The regression gate: saved runs, a noise-aware comparison, verdicts and reports.

A pull request should fail when it makes the fan-out slower and never when it
did not. Raw seconds against one saved run with a fixed percentage (what
pytest-benchmark does) cries wolf on noisy runners and changed machines, so
this gate:

* compares portable metrics by default: efficiency against the ideal time and
  the per-upstream-call overhead (raw seconds only when a rule asks for them);
* calls a case "slower" only when the change is beyond the rule's threshold
  AND beyond the noise: a one-sided Mann-Whitney U test on the repeated
  samples must reject "no shift" at `alpha`;
* reports faster cases and never fails on them, nor on new or missing cases.

Pure logic (no pytest import): the pytest plugin (`gate_plugin.py`) and the
`fanout compare` command (`gate_cli.py`) are thin shells around it. Every
problem with a file or an option is a `GateError` carrying ONE line.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_fanout.measure import Measurement, percentile
from pytest_fanout.table import render_markdown, render_text

#: What a results file says it is; anything else is refused with one line.
SCHEMA = "pytest-fanout/results"
#: Bump when a reader of the old layout would misread the new one.
SCHEMA_VERSION = 1
#: A case holding a `Measurement.to_dict()`; Locust results can add another kind later.
KIND_MEASUREMENT = "measurement"

#: Rules used when --fanout-fail-on is not given: portable metrics only.
DEFAULT_FAIL_ON = "efficiency-15%"
#: One-sided significance level of the Mann-Whitney test.
DEFAULT_ALPHA = 0.01
#: Below this many samples on either side no test can be significant: never "slower".
MIN_SAMPLES = 3

#: Packages whose versions go into a saved run's context.
CONTEXT_PACKAGES = ("pytest-fanout", "pytest", "pluggy", "httpx", "fastapi", "uvicorn", "locust")

SLOWER, FASTER, SAME = "slower", "faster", "same"
NEW, MISSING, SKIPPED = "new", "missing", "skipped"


class GateError(Exception):
    """A problem to report as one line (bad file, bad option), never a traceback."""


# ---- statistics --------------------------------------------------------------


def _normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (1-based) of `values` and the sizes of the groups of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@lru_cache(maxsize=4096)
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many orderings of n1 x's and n2 y's give U = 0, 1, ..., n1*n2 (no ties)."""
    if n1 == 0 or n2 == 0:
        return (1,)
    # The largest value is an x (it beats all n2 y's) or a y (it adds nothing).
    with_x = _u_counts(n1 - 1, n2)
    with_y = _u_counts(n1, n2 - 1)
    counts = [0] * (n1 * n2 + 1)
    for u, c in enumerate(with_x):
        counts[u + n2] += c
    for u, c in enumerate(with_y):
        counts[u] += c
    return tuple(counts)


#: Exact p-values (no ties) up to this many x*y pairs; the normal approximation above.
EXACT_LIMIT = 400


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: str = "greater"
) -> tuple[float, float]:
    """U statistic of `x` and a p-value for "x tends to be greater than y" (or less, two-sided).

    Exact when there are no ties and the samples are small; otherwise the
    normal approximation with tie and continuity corrections (as SciPy's
    `method="asymptotic"`). Why rank-based: timing samples are skewed with
    outliers, and a rank test does not let one stalled sample decide.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"unknown alternative {alternative!r}")
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, ties = _ranks([*x, *y])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    if not ties and n1 * n2 <= EXACT_LIMIT:
        counts = _u_counts(n1, n2)
        total = sum(counts)
        k = round(u1)
        upper = sum(counts[k:]) / total  # P(U >= u1)
        lower = sum(counts[: k + 1]) / total  # P(U <= u1)
        if alternative == "greater":
            return u1, upper
        if alternative == "less":
            return u1, lower
        return u1, min(1.0, 2 * min(upper, lower))
    n = n1 + n2
    mean = n1 * n2 / 2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1))
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:
        return u1, 1.0
    sd = math.sqrt(variance)
    if alternative == "greater":
        return u1, _normal_sf((u1 - mean - 0.5) / sd)
    if alternative == "less":
        return u1, _normal_sf((mean - u1 - 0.5) / sd)
    z = (abs(u1 - mean) - 0.5) / sd
    return u1, min(1.0, 2 * _normal_sf(z))


def bootstrap_interval(
    base: Sequence[float],
    now: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = statistics.median,
    *,
    relative: bool = True,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(now) - statistic(base) (relative if asked).

    Seeded, so the same files always give the same report.
    """
    rng = random.Random(seed)
    diffs = []
    for _ in range(resamples):
        b = statistic(rng.choices(base, k=len(base)))
        n = statistic(rng.choices(now, k=len(now)))
        if relative:
            if b == 0:
                continue
            diffs.append((n - b) / abs(b))
        else:
            diffs.append(n - b)
    if not diffs:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    return percentile(diffs, tail), percentile(diffs, 100 - tail)


# ---- cases and saved runs ----------------------------------------------------


def case_id(test: str, path: str) -> str:
    """A case is one path measured by one test: "<node id> <path>"."""
    return f"{test} {path}".strip()


@dataclass
class Case:
    """One record of a run: a `kind` and the record's own dict (`Measurement.to_dict()`)."""

    id: str
    kind: str
    record: dict[str, Any]

    @property
    def test(self) -> str:
        return str(self.record.get("test", ""))

    @property
    def path(self) -> str:
        return str(self.record.get("path", ""))

    def measurement(self) -> Measurement | None:
        """The Measurement of a "measurement" case, None for any other kind."""
        if self.kind != KIND_MEASUREMENT:
            return None
        return Measurement.from_dict(self.record)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "record": self.record}


@dataclass
class Run:
    """A saved session: its cases (in order) and where and how they were measured."""

    cases: list[Case]
    context: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    #: Where it was read from, for messages ("" when built in memory).
    source: str = ""
    #: Extra top-level sections (for example "comparison") written next to the cases.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_measurements(
        cls, measurements: Iterable[Measurement], context: dict[str, Any] | None = None
    ) -> Run:
        """Cases from a session's measurements; a repeated case id gets " #2", " #3"."""
        cases: list[Case] = []
        seen: dict[str, int] = {}
        for m in measurements:
            base = case_id(m.test, m.path)
            seen[base] = seen.get(base, 0) + 1
            cid = base if seen[base] == 1 else f"{base} #{seen[base]}"
            cases.append(Case(cid, KIND_MEASUREMENT, m.to_dict()))
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(cases, context or {}, created)

    def case(self, cid: str) -> Case | None:
        return next((c for c in self.cases if c.id == cid), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "context": self.context,
            "cases": [c.to_dict() for c in self.cases],
            **self.extra,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the run as JSON (parents created); a failure is a one-line GateError."""
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"
            target.write_text(text, encoding="utf-8")
        except (OSError, ValueError) as exc:
            raise GateError(f"cannot write {path}: {_reason(exc)}") from None
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], role: str = "baseline") -> Run:
        """Read and check a saved run; every way it can be wrong is one clear line."""
        name = f"{role} {path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GateError(f"{name} does not exist") from None
        except IsADirectoryError:
            raise GateError(f"{name} is a directory, not a results file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GateError(f"cannot read {name}: {_reason(exc)}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GateError(
                f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
        run = cls.from_dict(data, name)
        run.source = str(path)
        return run

    @classmethod
    def from_dict(cls, data: Any, source: str = "<data>") -> Run:
        """Validate the layout: schema name, version, and every case's required fields."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise GateError(f"{source} is not a pytest-fanout results file (schema {SCHEMA!r})")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise GateError(
                f"{source} has schema version {version!r}; this pytest-fanout reads version "
                f"{SCHEMA_VERSION}: save the baseline again with this version"
            )
        raw_cases = data.get("cases")
        if not isinstance(raw_cases, list):
            raise GateError(f"{source} has no list of cases")
        cases = []
        for index, raw in enumerate(raw_cases):
            cases.append(_case_from(raw, index, source))
        context = data.get("context") if isinstance(data.get("context"), dict) else {}
        extra = {k: v for k, v in data.items() if k not in _RUN_KEYS}
        return cls(cases, context, str(data.get("created", "")), source, extra)


_RUN_KEYS = {"schema", "schema_version", "created", "context", "cases"}


def _case_from(raw: Any, index: int, source: str) -> Case:
    where = f"{source}: case {index + 1}"
    if not isinstance(raw, dict):
        raise GateError(f"{where} is not an object")
    cid, kind, record = raw.get("id"), raw.get("kind"), raw.get("record")
    if not isinstance(cid, str) or not isinstance(kind, str) or not isinstance(record, dict):
        raise GateError(f"{where} needs a string id, a string kind and a record object")
    if kind == KIND_MEASUREMENT:
        samples = record.get("samples")
        if (
            not isinstance(samples, list)
            or not samples
            or not all(_is_real(s) and s >= 0 for s in samples)
        ):
            raise GateError(f"{where} ({cid}) has no valid samples (a list of seconds)")
        if not isinstance(record.get("path"), str):
            raise GateError(f"{where} ({cid}) has no path")
        try:
            Measurement.from_dict(record)
        except (TypeError, ValueError) as exc:
            raise GateError(f"{where} ({cid}) is not a measurement: {_reason(exc)}") from None
    return Case(cid, kind, record)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def collect_context(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Where the run happened: Python, packages, CPUs, platform, git commit, FANOUT_* settings.

    Kept so that a comparison can say when the baseline came from another machine.
    """
    packages = {}
    for name in CONTEXT_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
        "git": _git_info(Path(root) if root else Path.cwd()),
        "settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith("FANOUT_")},
        "argv": sys.argv[1:],
    }


def _git_info(root: Path) -> dict[str, Any] | None:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


# ---- metrics -----------------------------------------------------------------


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


# ---- rules -------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Fail when `metric` gets worse by more than `limit` (relative when `percent`)."""

    metric: Metric
    limit: float
    percent: bool
    text: str

    def change(self, base: float, now: float) -> float | None:
        """now - base, as a fraction of |base| for a percent rule (None when base is 0)."""
        if self.percent:
            return None if base == 0 else (now - base) / abs(base)
        return now - base

    def worse(self, change: float) -> bool:
        """Is `change` worse than the limit, in this metric's bad direction?"""
        return -change > self.limit if self.metric.higher_is_better else change > self.limit

    def better(self, change: float) -> bool:
        return change > self.limit if self.metric.higher_is_better else -change > self.limit


_RULE = re.compile(
    r"^(?P<metric>[a-z0-9_]+)\s*(?P<sign>[+-])\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>%|ms|s)?$"
)


def parse_fail_on(text: str) -> list[Rule]:
    """Parse "efficiency-10%,overhead+1ms" (or "none"); a mistake is a one-line GateError.

    Each rule is METRIC, the sign of the bad direction (- for metrics where
    higher is better, + where lower is better) and a limit: a percentage of
    the baseline, or an absolute amount (ms or s for times, a plain number for
    ratios). "none" means: report, never fail.
    """
    text = text.strip()
    if text.lower() in ("none", "never", ""):
        if text == "":
            raise GateError("--fanout-fail-on is empty: give rules such as efficiency-10% or none")
        return []
    rules = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _RULE.match(part.lower())
        if not match:
            raise GateError(
                f"cannot read fail-on rule {part!r}: write METRIC-N% or METRIC+N% "
                f"(for example {DEFAULT_FAIL_ON}); metrics: {', '.join(METRICS)}"
            )
        metric = METRICS.get(match["metric"])
        if metric is None:
            raise GateError(
                f"unknown metric {match['metric']!r} in fail-on rule {part!r}; "
                f"metrics: {', '.join(METRICS)}"
            )
        sign, unit, number = match["sign"], match["unit"], float(match["number"])
        if sign != metric.bad_sign:
            way = "drops" if metric.higher_is_better else "rises"
            raise GateError(
                f"fail-on rule {part!r}: {metric.name} is worse when it {way}, "
                f"write {metric.name}{metric.bad_sign}{match['number']}{unit or ''}"
            )
        if unit == "%":
            rules.append(Rule(metric, number / 100, True, part))
        elif unit in ("ms", "s"):
            if metric.unit != "s":
                raise GateError(
                    f"fail-on rule {part!r}: {metric.name} is a ratio, give a % or a plain number"
                )
            rules.append(Rule(metric, number / 1000 if unit == "ms" else number, False, part))
        else:
            if metric.unit == "s":
                raise GateError(f"fail-on rule {part!r}: give {metric.name} a unit (% or ms or s)")
            rules.append(Rule(metric, number, False, part))
    if not rules:
        raise GateError(f"no rule in --fanout-fail-on {text!r}")
    seen = set()
    for rule in rules:
        if rule.metric.name in seen:
            raise GateError(f"fail-on names {rule.metric.name} twice: keep one rule per metric")
        seen.add(rule.metric.name)
    return rules


def parse_alpha(text: str | float) -> float:
    """The significance level: a number strictly between 0 and 0.5."""
    try:
        alpha = float(text)
    except (TypeError, ValueError):
        raise GateError(f"alpha {text!r} is not a number") from None
    if not 0 < alpha < 0.5:
        raise GateError(f"alpha {text!r} must be between 0 and 0.5 (for example 0.01)")
    return alpha


@dataclass(frozen=True)
class GateConfig:
    """The rules that decide verdicts, whether a regression fails, and the test's level."""

    rules: list[Rule]
    fail: bool = True
    alpha: float = DEFAULT_ALPHA

    @classmethod
    def from_options(cls, fail_on: str | None, alpha: str | float | None = None) -> GateConfig:
        """From the option strings; "none" keeps the default rules for verdicts, never fails."""
        rules = parse_fail_on(fail_on or DEFAULT_FAIL_ON)
        fail = bool(rules)
        if not rules:
            rules = parse_fail_on(DEFAULT_FAIL_ON)
        return cls(rules, fail, parse_alpha(DEFAULT_ALPHA if alpha is None else alpha))

    def describe(self) -> str:
        rules = ",".join(r.text for r in self.rules)
        what = f"fail on {rules}" if self.fail else f"report only ({rules})"
        return f"{what}, when beyond the noise (Mann-Whitney, one-sided p < {self.alpha:g})"


# ---- comparison --------------------------------------------------------------


@dataclass
class MetricChange:
    """One rule applied to one case: the numbers, the test and the decision."""

    rule: Rule
    base: float
    now: float
    change: float | None
    p_worse: float
    p_better: float
    interval: tuple[float, float] | None
    regressed: bool
    improved: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.rule.metric.name,
            "rule": self.rule.text,
            "baseline": self.base,
            "now": self.now,
            "change": self.change,
            "change_is_relative": self.rule.percent,
            "interval_95": list(self.interval) if self.interval else None,
            "p_worse": self.p_worse,
            "p_better": self.p_better,
            "regressed": self.regressed,
            "improved": self.improved,
            "note": self.note,
        }


@dataclass
class CaseVerdict:
    """The gate's word on one case, with the metric that decided it first in `changes`."""

    id: str
    verdict: str
    changes: list[MetricChange] = field(default_factory=list)
    note: str = ""

    @property
    def shown(self) -> MetricChange | None:
        """The change to show: the regression, else the improvement, else the first rule's."""
        for wanted in ("regressed", "improved"):
            for change in self.changes:
                if getattr(change, wanted):
                    return change
        return self.changes[0] if self.changes else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "verdict": self.verdict,
            "note": self.note,
            "metrics": [c.to_dict() for c in self.changes],
        }


@dataclass
class Comparison:
    """Every case's verdict, the rules used, and notes about the two runs' contexts."""

    verdicts: list[CaseVerdict]
    config: GateConfig
    notes: list[str] = field(default_factory=list)
    baseline_source: str = ""

    @property
    def regressions(self) -> list[CaseVerdict]:
        return [v for v in self.verdicts if v.verdict == SLOWER]

    @property
    def failed(self) -> bool:
        """Does this comparison fail the run? Only regressions, and only when rules fail."""
        return self.config.fail and bool(self.regressions)

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in (SLOWER, FASTER, SAME, NEW, MISSING, SKIPPED)}
        for v in self.verdicts:
            out[v.verdict] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline_source,
            "rules": [r.text for r in self.config.rules],
            "fails_on_regression": self.config.fail,
            "alpha": self.config.alpha,
            "failed": self.failed,
            "counts": self.counts(),
            "notes": self.notes,
            "cases": [v.to_dict() for v in self.verdicts],
        }


def compare_values(rule: Rule, base: Values, now: Values, alpha: float) -> MetricChange:
    """Apply one rule: beyond the threshold AND beyond the noise, or not a change."""
    change = rule.change(base.stat, now.stat)
    worse_way = "less" if rule.metric.higher_is_better else "greater"
    better_way = "greater" if rule.metric.higher_is_better else "less"
    _, p_worse = mann_whitney_u(now.samples, base.samples, worse_way)
    _, p_better = mann_whitney_u(now.samples, base.samples, better_way)
    stat = _p95_of if rule.metric.name == "p95" else statistics.median
    interval: tuple[float, float] | None = bootstrap_interval(
        base.samples, now.samples, stat, relative=rule.percent
    )
    if interval is not None and not all(math.isfinite(x) for x in interval):
        interval = None  # a zero baseline has no relative change: JSON has no NaN
    enough = min(len(base.samples), len(now.samples)) >= MIN_SAMPLES
    beyond = change is not None and rule.worse(change)
    regressed = enough and beyond and p_worse < alpha
    improved = enough and change is not None and rule.better(change) and p_better < alpha
    note = ""
    if change is None:
        note = "baseline is 0: no relative change"
    elif not enough:
        note = f"too few samples to judge (need {MIN_SAMPLES} a side)"
    elif beyond and not regressed:
        note = f"beyond {rule.text} but within the noise (p={p_worse:.2g})"
    return MetricChange(
        rule, base.stat, now.stat, change, p_worse, p_better, interval, regressed, improved, note
    )


def _p95_of(values: Sequence[float]) -> float:
    return percentile(list(values), 95)


def compare_runs(baseline: Run, current: Run, config: GateConfig) -> Comparison:
    """Case by case (matched by id): verdicts, plus notes on what differs between the runs."""
    verdicts = []
    base_ids = {c.id for c in baseline.cases}
    now_ids = {c.id for c in current.cases}
    for case in current.cases:
        old = baseline.case(case.id)
        if old is None:
            verdicts.append(CaseVerdict(case.id, NEW, note="not in the baseline"))
            continue
        verdicts.append(_compare_case(old, case, baseline, current, config))
    for case in baseline.cases:
        if case.id not in now_ids:
            verdicts.append(CaseVerdict(case.id, MISSING, note="in the baseline, not measured now"))
    notes = context_notes(baseline.context, current.context, config)
    if not base_ids & now_ids and baseline.cases and current.cases:
        notes.append("no case in common: were the tests renamed or moved?")
    return Comparison(verdicts, config, notes, baseline.source)


def _compare_case(
    old: Case, new: Case, base_run: Run, now_run: Run, config: GateConfig
) -> CaseVerdict:
    if old.kind != new.kind:
        return CaseVerdict(new.id, SKIPPED, note=f"kind changed from {old.kind} to {new.kind}")
    if new.kind != KIND_MEASUREMENT:
        return CaseVerdict(new.id, SKIPPED, note=f"the gate does not compare {new.kind} yet")
    changes, missing = [], []
    for rule in config.rules:
        base = rule.metric.read(old, base_run)
        now = rule.metric.read(new, now_run)
        if base is None or now is None:
            missing.append(rule.metric.name)
            continue
        changes.append(compare_values(rule, base, now, config.alpha))
    notes = []
    if missing:
        notes.append(f"no {', '.join(missing)} (needs n and the upstream delay)")
    notes.extend(_setting_notes(old, new))
    if not changes:
        return CaseVerdict(new.id, SAME, [], "; ".join(notes) or "no metric to compare")
    if any(c.regressed for c in changes):
        verdict = SLOWER
    elif any(c.improved for c in changes):
        verdict = FASTER
    else:
        verdict = SAME
    return CaseVerdict(new.id, verdict, changes, "; ".join(notes))


def _setting_notes(old: Case, new: Case) -> list[str]:
    a, b = old.record, new.record
    notes = []
    for key, label in (("upstream_delay_s", "upstream delay"), ("upstream_jitter_s", "jitter")):
        if a.get(key) != b.get(key):
            notes.append(f"{label} changed {a.get(key)} -> {b.get(key)}")
    return notes


def context_notes(base: dict[str, Any], now: dict[str, Any], config: GateConfig) -> list[str]:
    """What differs between the two runs' machines and versions (a warning, not a failure)."""
    notes = []
    diffs = []
    for key in ("python", "implementation", "machine", "cpu_count"):
        if base.get(key) != now.get(key) and base.get(key) is not None:
            diffs.append(f"{key} {base.get(key)} -> {now.get(key)}")
    if diffs:
        raw = [r.metric.name for r in config.rules if not r.metric.portable]
        tail = (
            f"; {', '.join(raw)} are raw seconds and do not travel between machines"
            if raw
            else "; the rules use portable metrics only"
        )
        notes.append("baseline from another environment: " + ", ".join(diffs) + tail)
    old_settings, new_settings = base.get("settings") or {}, now.get("settings") or {}
    if old_settings != new_settings and (old_settings or new_settings):
        keys = sorted(
            k
            for k in set(old_settings) | set(new_settings)
            if old_settings.get(k) != new_settings.get(k)
        )
        notes.append(
            "FANOUT_* settings differ: "
            + ", ".join(f"{k}={old_settings.get(k)!s}->{new_settings.get(k)!s}" for k in keys)
        )
    return notes


# ---- reports -----------------------------------------------------------------

HEADERS = ("case", "metric", "baseline", "now", "change", "p", "verdict")


def _format(metric: Metric, value: float) -> str:
    if metric.unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    return f"{value:.3g}"


def _format_change(change: MetricChange) -> str:
    if change.change is None:
        return "-"
    if change.rule.percent:
        text = f"{change.change * 100:+.1f}%"
    elif change.rule.metric.unit == "s":
        text = f"{change.change * 1000:+.2f} ms"
    else:
        text = f"{change.change:+.3f}"
    return text


def verdict_rows(comparison: Comparison) -> list[list[str]]:
    """One row per case: the deciding (or first) metric, then the verdict."""
    rows = []
    for v in comparison.verdicts:
        c = v.shown
        if c is None:
            rows.append([v.id, "-", "-", "-", "-", "-", v.verdict])
            continue
        m = c.rule.metric
        rows.append(
            [
                v.id,
                m.name,
                _format(m, c.base),
                _format(m, c.now),
                _format_change(c),
                f"{c.p_worse if c.regressed or not c.improved else c.p_better:.2g}",
                v.verdict,
            ]
        )
    return rows


def regression_lines(comparison: Comparison) -> list[str]:
    """One line per regressed case, the line a CI log and a PR reviewer read first."""
    lines = []
    for v in comparison.regressions:
        for c in v.changes:
            if c.regressed:
                m = c.rule.metric
                lines.append(
                    f"REGRESSION {v.id}: {m.name} {_format(m, c.base)} -> {_format(m, c.now)} "
                    f"({_format_change(c)}, limit {c.rule.text}, p={c.p_worse:.2g})"
                )
                break
    return lines


def summary_line(comparison: Comparison) -> str:
    counts = comparison.counts()
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    head = "FAILED" if comparison.failed else "passed"
    return f"fanout gate {head}: " + (", ".join(parts) or "no cases")


def render_comparison_text(comparison: Comparison) -> str:
    """The terminal's verdict table, the notes, and a one-line summary."""
    lines = [render_text(HEADERS, verdict_rows(comparison))]
    for v in comparison.verdicts:
        if v.note or (v.shown and v.shown.note):
            detail = "; ".join(x for x in (v.note, v.shown.note if v.shown else "") if x)
            lines.append(f"  {v.id}: {detail}")
    lines.extend(f"note: {n}" for n in comparison.notes)
    lines.append(f"rules: {comparison.config.describe()}")
    lines.append(summary_line(comparison))
    return "\n".join(lines)


def render_comparison_markdown(comparison: Comparison, current: Run | None = None) -> str:
    """A PR comment / $GITHUB_STEP_SUMMARY section: headline, verdict table, notes."""
    icon = ":x:" if comparison.failed else ":white_check_mark:"
    lines = [f"### {icon} pytest-fanout regression gate", "", summary_line(comparison), ""]
    regressions = regression_lines(comparison)
    if regressions:
        lines += [f"- `{line}`" for line in regressions] + [""]
    rows = [[f"`{r[0]}`", *r[1:-1], _verdict_md(r[-1])] for r in verdict_rows(comparison)]
    lines += [render_markdown(HEADERS, rows), ""]
    notes = [f"`{v.id}`: {v.note}" for v in comparison.verdicts if v.note]
    notes += comparison.notes
    if notes:
        lines += ["<details><summary>notes</summary>", ""]
        lines += [f"- {n}" for n in notes] + ["", "</details>", ""]
    base = comparison.baseline_source or "the baseline"
    lines.append(f"Compared with {base}: {comparison.config.describe()}.")
    if current is not None:
        git = current.context.get("git") or {}
        if git.get("commit"):
            lines.append(f"Measured at commit {git['commit'][:12]}.")
    return "\n".join(lines) + "\n"


def _verdict_md(verdict: str) -> str:
    return {SLOWER: "**slower** :x:", FASTER: "faster :rocket:"}.get(verdict, verdict)


def measurement_rows(run: Run) -> list[list[Any]]:
    """The run's own numbers (no baseline): for a main-branch summary."""
    rows = []
    for case in run.cases:
        m = case.measurement()
        if m is None or not m.samples:
            rows.append([case.id, case.kind, "-", "-", "-", "-", "-"])
            continue
        eff = m.efficiency
        ovh = m.overhead_per_call_s
        rows.append(
            [
                case.id,
                len(m.samples),
                f"{m.median_s * 1000:.1f} ms",
                f"{m.p95_s * 1000:.1f} ms",
                f"{m.ideal_s * 1000:.0f} ms" if m.ideal_s is not None else "-",
                f"{eff:.3f}" if eff is not None else "-",
                f"{ovh * 1000:.2f} ms" if ovh is not None else "-",
            ]
        )
    return rows


RUN_HEADERS = ("case", "samples", "median", "p95", "ideal", "efficiency", "overhead/call")


def render_run_markdown(run: Run) -> str:
    """Markdown for a run without a baseline (main's own measurements)."""
    lines = ["### pytest-fanout measurements", ""]
    lines.append(render_markdown(RUN_HEADERS, measurement_rows(run)) if run.cases else "No cases.")
    return "\n".join(lines) + "\n"


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a report; failure is one line."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise GateError(f"cannot write {path}: {_reason(exc)}") from None
