"""The comparison: each case of two runs matched by id and given a verdict, noise-aware.

Why: a case is "slower" only when a rule's change is beyond its limit AND a
one-sided Mann-Whitney test on the repeated samples says it is beyond the
noise; faster, new and missing cases are reported and never fail. Locust
rows are judged the same way, on their response-time histograms and their
per-request failures; requests/s, one number a run, by its limit alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_fanout.gate.metrics import Values
from pytest_fanout.gate.rules import GateConfig, Rule
from pytest_fanout.gate.runs import KIND_LOCUST, KIND_MEASUREMENT, Case, Run
from pytest_fanout.gate.stats import bootstrap_interval, mann_whitney_tails, power_note

#: Below this many samples on either side no test can be significant: never "slower".
MIN_SAMPLES = 3

SLOWER, FASTER, SAME = "slower", "faster", "same"
NEW, MISSING, SKIPPED = "new", "missing", "skipped"


@dataclass
class MetricChange:
    """One rule applied to one case: the numbers, the test and the decision."""

    rule: Rule
    base: float
    now: float
    change: float | None
    #: One-sided p-values of the Mann-Whitney test; None when there was nothing to test.
    p_worse: float | None
    p_better: float | None
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
            "reported_only": not self.rule.enforced,
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
    #: The baseline itself, for reports that show its numbers and commit (not saved).
    baseline_run: Run | None = None

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


#: Bootstrap resamples: measurements have ~10 samples; a Locust row up to 2000 (slower each).
RESAMPLES = {KIND_MEASUREMENT: 2000, KIND_LOCUST: 200}
#: Resamples for all the cases of one comparison together: beyond it each case gets fewer,
#: and below MIN_RESAMPLES none (no interval, the verdict does not use it), so that a run
#: of 100,000 cases is compared in seconds.
RESAMPLE_BUDGET = 200_000
MIN_RESAMPLES = 100


def compare_values(
    rule: Rule, base: Values, now: Values, alpha: float, resamples: int | None = None
) -> MetricChange:
    """Apply one rule: beyond the threshold AND beyond the noise, or not a change.

    A metric of one number a side (requests/s) has no noise to test: its limit
    alone decides. A reported-only rule never regresses nor improves a case:
    its note says where the change went.
    """
    metric = rule.metric
    change = rule.change(base.stat, now.stat)
    tested = bool(base.samples) and bool(now.samples)
    p_worse: float | None = None
    p_better: float | None = None
    interval: tuple[float, float] | None = None
    if tested:
        _, greater, less = mann_whitney_tails(now.samples, base.samples)
        p_worse, p_better = (less, greater) if metric.higher_is_better else (greater, less)
        count = RESAMPLES.get(metric.kind, 2000) if resamples is None else resamples
        if count >= MIN_RESAMPLES:
            interval = bootstrap_interval(
                base.samples, now.samples, metric.statistic, relative=rule.percent, resamples=count
            )
            if not all(math.isfinite(x) for x in interval):
                interval = None  # a zero baseline has no relative change: JSON has no NaN
    enough = tested and min(len(base.samples), len(now.samples)) >= MIN_SAMPLES
    beyond = change is not None and rule.worse(change)
    beyond_better = change is not None and rule.better(change)
    if not metric.sampled:
        worse, better = beyond, beyond_better
    else:
        worse = enough and beyond and p_worse is not None and p_worse < alpha
        better = enough and beyond_better and p_better is not None and p_better < alpha
    note = ""
    weak = power_note(len(base.samples), len(now.samples), alpha, MIN_SAMPLES) if tested else ""
    if change is None:
        note = "baseline is 0: no relative change"
    elif metric.sampled and not tested:
        note = "no per-request values on both sides (no histogram saved): not judged"
    elif metric.sampled and weak:
        # A measurement's samples are its repeat; a Locust row's are its requests.
        note = weak if metric.kind == KIND_MEASUREMENT else "too few samples to judge"
    elif beyond and not worse:
        note = f"beyond {rule.text} but within the noise (p={p_worse:.2g})"
    elif not metric.sampled and (worse or better):
        note = "one number a side, no noise test: the limit alone decides"
    if not rule.enforced:
        if worse or better:
            way = "worse" if worse else "better"
            note = f"{way} beyond {rule.text}, reported only: no rule names {metric.name}"
        elif not note:
            note = "reported only"
        worse = better = False
    return MetricChange(
        rule, base.stat, now.stat, change, p_worse, p_better, interval, worse, better, note
    )


def compare_runs(baseline: Run, current: Run, config: GateConfig) -> Comparison:
    """Case by case (matched by id): verdicts, plus notes on what differs between the runs."""
    verdicts = []
    by_id: dict[str, Case] = {}
    for c in baseline.cases:
        by_id.setdefault(c.id, c)
    base_ids = set(by_id)
    now_ids = {c.id for c in current.cases}
    share = RESAMPLE_BUDGET // max(1, len(now_ids & base_ids))
    for case in current.cases:
        old = by_id.get(case.id)
        if old is None:
            verdicts.append(CaseVerdict(case.id, NEW, note="not in the baseline"))
            continue
        resamples = min(RESAMPLES.get(case.kind, 2000), share)
        verdicts.append(_compare_case(old, case, baseline, current, config, resamples))
    for case in baseline.cases:
        if case.id not in now_ids:
            verdicts.append(CaseVerdict(case.id, MISSING, note="in the baseline, not measured now"))
    kinds = {c.kind for c in baseline.cases} & {c.kind for c in current.cases}
    notes = context_notes(baseline.context, current.context, config, kinds)
    if not base_ids & now_ids and baseline.cases and current.cases:
        notes.append("no case in common: were the tests renamed or moved?")
    return Comparison(verdicts, config, notes, baseline.source, baseline)


def _compare_case(
    old: Case, new: Case, base_run: Run, now_run: Run, config: GateConfig, resamples: int
) -> CaseVerdict:
    if old.kind != new.kind:
        return CaseVerdict(new.id, SKIPPED, note=f"kind changed from {old.kind} to {new.kind}")
    if new.kind not in (KIND_MEASUREMENT, KIND_LOCUST):
        return CaseVerdict(new.id, SKIPPED, note=f"the gate does not compare {new.kind} yet")
    changes, missing = [], []
    for rule in config.rules_for(new.kind):
        base = rule.metric.read(old, base_run)
        now = rule.metric.read(new, now_run)
        if base is None or now is None:
            missing.append(rule.metric.name)
            continue
        changes.append(compare_values(rule, base, now, config.alpha, resamples))
    notes = []
    if missing:
        why = _missing_reason(new.kind, missing)
        notes.append(f"no {', '.join(missing)} ({why})")
    notes.extend(_setting_notes(old, new))
    if not changes:
        return CaseVerdict(new.id, SAME, [], "; ".join(notes) or "no metric to compare")
    _zero_is_slower(changes)
    if any(c.regressed for c in changes):
        verdict = SLOWER
    elif any(c.improved for c in changes):
        verdict = FASTER
    else:
        verdict = SAME
    result = CaseVerdict(new.id, verdict, changes)
    if new.kind == KIND_LOCUST:
        # The table shows one metric; the note carries the others of the row.
        notes.extend(_change_line(c) for c in changes if c is not result.shown)
    result.note = "; ".join(notes)
    return result


def _missing_reason(kind: str, missing: list[str]) -> str:
    if kind != KIND_MEASUREMENT:
        return "no requests"
    if missing == ["cpu"]:
        return "no CPU samples from the probe on both sides"
    return "needs n and the upstream delay" + (", cpu needs the probe" if "cpu" in missing else "")


def _zero_is_slower(changes: list[MetricChange]) -> None:
    """A Locust row whose completed requests fell to none is slower, whatever the rules name."""
    for c in changes:
        if c.rule.metric.name == "completed" and c.base > 0 and c.now == 0:
            c.regressed, c.improved = True, False
            c.note = f"no request completed (baseline {c.base:.0f}): slower whatever the rules"


def _change_line(c: MetricChange) -> str:
    """One change as a line of a note: "rps 52.1/s -> 40.3/s (-22.6%, reported only)"."""
    m = c.rule.metric
    detail = ", ".join(x for x in (c.rule.format_change(c.change), c.note) if x)
    return f"{m.name} {m.format(c.base)} -> {m.format(c.now)} ({detail})"


#: Record fields whose change makes a comparison less like-for-like, per kind of case.
_SETTINGS = {
    KIND_MEASUREMENT: (("upstream_delay_s", "upstream delay"), ("upstream_jitter_s", "jitter")),
    KIND_LOCUST: (
        ("users", "users"),
        ("spawn_rate", "spawn rate"),
        ("run_time_s", "run time"),
        ("user_classes", "user classes"),
        ("options", "locust options"),
        ("exit_code", "locust exit code"),
    ),
}


def _setting_notes(old: Case, new: Case) -> list[str]:
    a, b = old.record, new.record
    notes = []
    for key, label in _SETTINGS.get(new.kind, ()):
        if a.get(key) != b.get(key):
            notes.append(f"{label} changed {a.get(key)} -> {b.get(key)}")
    return notes


def context_notes(
    base: dict[str, Any],
    now: dict[str, Any],
    config: GateConfig,
    kinds: Iterable[str] | None = None,
) -> list[str]:
    """What differs between the two runs' machines and versions (a warning, not a failure).

    `kinds`: the kinds of case both runs hold, so that only rules that judged
    something are named (all rules when None).
    """
    notes = []
    diffs = []
    for key in ("python", "implementation", "machine", "cpu_count"):
        if base.get(key) != now.get(key) and base.get(key) is not None:
            diffs.append(f"{key} {base.get(key)} -> {now.get(key)}")
    if diffs:
        wanted = None if kinds is None else set(kinds)
        raw_metrics = [
            r.metric
            for r in config.rules
            if not r.metric.portable and (wanted is None or r.metric.kind in wanted)
        ]
        raw = [m.name for m in raw_metrics]
        what = "raw seconds" if all(m.unit == "s" for m in raw_metrics) else "raw timings or rates"
        tail = (
            f"; {', '.join(raw)} are {what} and do not travel between machines"
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
