"""The comparison: each case of two runs matched by id and given ONE word, noise-aware.

Why: a case is a *regression* only when a rule's change is beyond its limit
AND a one-sided Mann-Whitney test on the repeated samples says it is beyond
the noise; an *improvement* the same way in the good direction; *same* when
at least one rule could have flagged it and none did; and *not gated*, with
the reason, when nothing was compared (a new or missing case, no comparable
metric, latency against another machine, too few samples). A run in which no
case was gated fails on its own exit status: "passed" is never said of what
was not compared. Locust rows are judged the same way, on their response-time
histograms and per-request failures; requests/s, one number a run, and the
structure, exact, by their limits alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_fanout.artifacts import mask_text as redact
from pytest_fanout.gate.machine import fingerprint_difference
from pytest_fanout.gate.metrics import Metric, Values, connections_lists, structure_variants
from pytest_fanout.gate.rules import GateConfig, Rule
from pytest_fanout.gate.runs import KIND_LOCUST, KIND_MEASUREMENT, Case, Run
from pytest_fanout.gate.stats import (
    bootstrap_interval,
    mann_whitney_tails,
    power_note,
    repeat_needed,
    smallest_detectable_change,
)
from pytest_fanout.limits import BUSY_WAIT_SHARE, ExitCode
from pytest_fanout.measurement import Measurement

#: Below this many samples on either side no test can be significant: never a regression.
MIN_SAMPLES = 3

#: The key of a measurement's record holding the samples the A/B gate took itself on fresh
#: app processes (gate/ab.py writes it; the lists that `POOLED` names, with their counts).
POOL_KEY = "ab_pool"
POOLED = ("samples", "app_cpu_per_sample", "first_byte_per_sample")

#: The four verdicts, the same word in the terminal, the Markdown and the JSON.
REGRESSION, IMPROVEMENT, SAME, NOT_GATED = "regression", "improvement", "same", "not gated"
VERDICTS = (REGRESSION, IMPROVEMENT, SAME, NOT_GATED)
#: The label of the critical-path weights where the gate could not compare them.
WEIGHTS_LABEL = "critical-path weights"
#: Exit status of a gate that compared nothing (pytest's own codes are 0-5; 1 = regression).
EXIT_NOT_GATED = ExitCode.NOT_GATED


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
    #: Which part of a metric with several values a case ("rounds[payments]"), else "".
    part: str = ""
    #: Could this change have made the case a regression? False when it could not be judged
    #: (a zero baseline, no samples, too few samples) or the rule is reported only.
    gated: bool = True
    #: The smallest bad-direction change the case could have flagged, in the rule's units (a
    #: fraction for a % rule); None when no change could be flagged.
    detectable: float | None = None
    #: Why an enforced rule could not judge this case for want of samples (the counts and the
    #: repeat that would judge it), else "": never counted as "same".
    unjudged: str = ""
    #: What the evidence suggests of a regressed change ("a client built per request?"), else "".
    hint: str = ""

    @property
    def label(self) -> str:
        """The metric's name, with the part: "median", "structure rounds[payments]"."""
        return f"{self.rule.metric.name} {self.part}" if self.part else self.rule.metric.name

    @property
    def p_value(self) -> float | None:
        """The p-value of the direction that matters: the improvement's, else the regression's."""
        return self.p_better if self.improved and not self.regressed else self.p_worse

    def catches(self) -> str:
        """ "catches changes of at least 8%", in words, or why it cannot."""
        metric = self.rule.metric
        if not self.gated:
            if not self.rule.enforced:
                return "reported only"
            return self.note or "cannot flag a change"
        if metric.exact:
            return (
                "exact: catches any rise"
                if self.rule.limit == 0
                else (f"exact: catches a rise beyond {self.rule.format_limit()}")
            )
        if self.detectable is None:
            return "cannot flag a change"
        amount = self.rule.format_amount(self.detectable)
        how = "" if metric.sampled else " (one number a side: the limit alone)"
        return f"catches changes of at least {amount}{how}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.rule.metric.name,
            "part": self.part,
            "rule": self.rule.text,
            "baseline": self.base,
            "now": self.now,
            "change": self.change,
            "change_is_relative": self.rule.percent,
            "interval_95": list(self.interval) if self.interval else None,
            "p_value": self.p_value,
            "p_worse": self.p_worse,
            "p_better": self.p_better,
            "detectable_change": self.detectable,
            "catches": self.catches(),
            "exact": self.rule.metric.exact,
            "gated": self.gated,
            "regressed": self.regressed,
            "improved": self.improved,
            "reported_only": not self.rule.enforced,
            "not_judged": self.unjudged,
            "note": self.note,
            "hint": self.hint,
        }


def exact_first(changes: Iterable[MetricChange]) -> list[MetricChange]:
    """`changes` with the exact counts (structure, rejected, retries, connections...) before
    the timings, each group in the rules' order: the reasons a reader can trust on any
    machine come first."""
    return sorted(changes, key=lambda c: not c.rule.metric.exact)


@dataclass
class CaseVerdict:
    """The gate's word on one case, with the metric that decided it first in `changes`."""

    id: str
    verdict: str
    changes: list[MetricChange] = field(default_factory=list)
    note: str = ""
    #: Why a case is not gated (one phrase); "" for a gated case.
    reason: str = ""
    #: What else the gate could not judge in this case, beside the rules: {label: why}
    #: ("critical-path weights": "no critical-path weights in the baseline").
    extra_unjudged: dict[str, str] = field(default_factory=dict)

    @property
    def shown(self) -> MetricChange | None:
        """The change to show: the regression, else the improvement (an exact count's first:
        it holds on any machine), else the first rule's."""
        for wanted in ("regressed", "improved"):
            for change in exact_first(self.changes):
                if getattr(change, wanted):
                    return change
        return self.changes[0] if self.changes else None

    @property
    def gated(self) -> bool:
        return self.verdict != NOT_GATED

    @property
    def not_judged(self) -> list[MetricChange]:
        """The enforced rules that could not judge this case (too few samples)."""
        return [c for c in self.changes if c.unjudged]

    @property
    def unjudged_by_label(self) -> dict[str, str]:
        """{label: why} of all this case could not judge: the rules (`not_judged`), then
        `extra_unjudged` (the critical-path weights). Every report reads this one."""
        out = {c.label: c.unjudged for c in self.not_judged}
        out.update(self.extra_unjudged)
        return out

    @property
    def unjudged_note(self) -> str:
        """ "not gated: cpu (not judged with 10 samples a side ...)": the rules that could not
        judge this case, with why (rules sharing a why share a clause)."""
        by_why: dict[str, list[str]] = {}
        for label, why in self.unjudged_by_label.items():
            by_why.setdefault(why, []).append(label)
        return "; ".join(
            f"not gated: {', '.join(dict.fromkeys(labels))} ({why})"
            for why, labels in by_why.items()
        )

    @property
    def shown_verdict(self) -> str:
        """The word with the rules that did not judge a gated case: "same (not gated: cpu)"."""
        labels = list(self.unjudged_by_label)
        if not self.gated or not labels:
            return self.verdict
        return f"{self.verdict} (not gated: {', '.join(labels)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "verdict": self.verdict,
            "shown_verdict": self.shown_verdict,
            "gated": self.gated,
            "not_judged": self.unjudged_by_label,
            "reason": self.reason,
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
    #: Why the machine-bound rules (median, p95, cpu, Locust timings) were skipped, or "".
    latency_skipped: str = ""
    #: The kinds of case the two runs hold (the reports name only the rules that judge them).
    kinds: frozenset[str] = frozenset()

    def describe(self) -> str:
        return self.config.describe(self.kinds)

    @property
    def regressions(self) -> list[CaseVerdict]:
        return [v for v in self.verdicts if v.verdict == REGRESSION]

    @property
    def nothing_gated(self) -> bool:
        """No case of the run was compared by any rule (a renamed suite, another machine...)."""
        return not any(v.gated for v in self.verdicts)

    @property
    def ungated_fails(self) -> bool:
        """Does "nothing gated" fail the run? Unless accepted, or the rules only report."""
        return self.nothing_gated and self.config.fail and not self.config.allow_ungated

    @property
    def failed(self) -> bool:
        """Does this comparison fail the run? On a regression, or when nothing was gated."""
        return self.config.fail and bool(self.regressions) or self.ungated_fails

    @property
    def exit_status(self) -> int:
        """0 passed, 1 a regression, EXIT_NOT_GATED when nothing was compared."""
        if self.config.fail and self.regressions:
            return 1
        return EXIT_NOT_GATED if self.ungated_fails else 0

    def why_not_gated(self) -> str:
        """One line: why no case was gated (the reasons, most frequent first)."""
        if not self.verdicts:
            return "no case was measured in this run, so nothing was compared"
        reasons: dict[str, int] = {}
        for v in self.verdicts:
            reasons[v.reason] = reasons.get(v.reason, 0) + 1
        ordered = sorted(reasons.items(), key=lambda item: -item[1])
        parts = [f"{n} {reason}" for reason, n in ordered[:3]]
        return "no case was gated: " + "; ".join(parts)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(VERDICTS, 0)
        for v in self.verdicts:
            out[v.verdict] += 1
        return out

    def not_judged_counts(self) -> dict[str, int]:
        """Per label (a rule's metric, or the critical-path weights), in how many cases it
        could not judge (too few samples; weights without an interval)."""
        out: dict[str, int] = {}
        for v in self.verdicts:
            for label in v.unjudged_by_label:
                out[label] = out.get(label, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        data = {
            "baseline": self.baseline_source,
            "rules": [r.text for r in self.config.rules],
            "fails_on_regression": self.config.fail,
            "allow_ungated": self.config.allow_ungated,
            "alpha": self.config.alpha,
            "failed": self.failed,
            "exit_status": self.exit_status,
            "counts": self.counts(),
            "not_judged": self.not_judged_counts(),
            "latency_skipped": self.latency_skipped,
            "notes": self.notes,
            "cases": [v.to_dict() for v in self.verdicts],
        }
        if self.nothing_gated:
            data["not_gated"] = self.why_not_gated()
        return data


#: Bootstrap resamples: measurements have ~10 samples; a Locust row up to 2000 (slower each).
RESAMPLES = {KIND_MEASUREMENT: 2000, KIND_LOCUST: 200}
#: Resamples for all the cases of one comparison together: beyond it each case gets fewer,
#: and below MIN_RESAMPLES none (no interval, the verdict does not use it), so that a run
#: of 100,000 cases is compared in seconds.
RESAMPLE_BUDGET = 200_000
MIN_RESAMPLES = 100


def compare_values(
    rule: Rule,
    base: Values,
    now: Values,
    alpha: float,
    resamples: int | None = None,
    part: str = "",
) -> MetricChange:
    """Apply one rule: beyond the threshold AND beyond the noise, or not a change.

    A metric of one number a side (requests/s, the exact structure) has no
    noise to test: its limit alone decides. A reported-only rule never
    regresses nor improves a case: its note says where the change went.
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
    fewest = min(len(base.samples), len(now.samples))
    enough = tested and fewest >= max(MIN_SAMPLES, metric.min_samples)
    beyond = change is not None and rule.worse(change)
    beyond_better = change is not None and rule.better(change)
    if not metric.sampled:
        worse, better = beyond, beyond_better
    else:
        worse = enough and beyond and p_worse is not None and p_worse < alpha
        better = enough and beyond_better and p_better is not None and p_better < alpha
    note = unjudged = ""
    weak = power_note(len(base.samples), len(now.samples), alpha, MIN_SAMPLES) if tested else ""
    gated = change is not None
    if change is None:
        note = "baseline is 0: no relative change"
    elif metric.sampled and not tested:
        note = "no per-request values on both sides (no histogram saved): not judged"
        gated = False
    elif metric.sampled and weak:
        # A measurement's samples are its repeat; a Locust row's are its requests.
        note = weak if metric.kind == KIND_MEASUREMENT else "too few samples to judge"
        unjudged, gated = note, False
    elif metric.sampled and fewest < metric.min_samples:
        note = (
            f"not judged with {fewest} samples a side: {metric.name} needs"
            f" {metric.min_samples} (over fewer, two processes of the same code differ more"
            f" than the test sees); use repeat >= {metric.min_samples}"
        )
        unjudged, gated = note, False
    elif beyond and not worse:
        note = f"beyond {rule.text} but within the noise (p={p_worse:.2g})"
    elif not metric.sampled and not metric.exact and (worse or better):
        note = "one number a side, no noise test: the limit alone decides"
    detectable = _detectable(rule, base, now, alpha) if gated else None
    if not rule.enforced:
        if worse or better:
            way = "worse" if worse else "better"
            note = f"{way} beyond {rule.text}, reported only: no rule names {metric.name}"
        elif not note:
            note = "reported only"
        worse = better = False
        gated = False
        unjudged = ""  # reported only: it never judges, so it is not "not judged" either
    return MetricChange(
        rule,
        base.stat,
        now.stat,
        change,
        p_worse,
        p_better,
        interval,
        worse,
        better,
        note,
        part,
        gated,
        detectable,
        unjudged,
    )


def _detectable(rule: Rule, base: Values, now: Values, alpha: float) -> float | None:
    """The smallest change this rule could flag here: the limit, or the noise's when larger."""
    metric = rule.metric
    if not metric.sampled:
        return rule.limit
    noise = smallest_detectable_change(
        base.samples,
        now.samples,
        alpha,
        worse_is_higher=not metric.higher_is_better,
        relative=rule.percent,
        statistic=metric.statistic,
    )
    return None if noise is None else max(rule.limit, noise)


def compare_runs(
    baseline: Run, current: Run, config: GateConfig, *, same_machine: bool = False
) -> Comparison:
    """Case by case (matched by id): verdicts, plus notes on what differs between the runs.

    Machine-bound rules (raw timings: median, p95, cpu, Locust p95 and rates)
    judge only when both runs carry the same machine fingerprint, or when
    `same_machine` says so (A/B: both sides measured in this process).
    """
    latency_skipped = (
        "" if same_machine else (fingerprint_difference(baseline.context, current.context) or "")
    )
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
            verdicts.append(CaseVerdict(case.id, NOT_GATED, reason="new case: not in the baseline"))
            continue
        resamples = min(RESAMPLES.get(case.kind, 2000), share)
        verdicts.append(
            _compare_case(
                old,
                case,
                baseline,
                current,
                config,
                resamples,
                bool(latency_skipped),
                alternated=same_machine,
            )
        )
    for case in baseline.cases:
        if case.id not in now_ids:
            verdicts.append(
                CaseVerdict(case.id, NOT_GATED, reason="in the baseline, not measured in this run")
            )
    kinds = {c.kind for c in baseline.cases} & {c.kind for c in current.cases}
    notes = []
    if latency_skipped:
        skipped = _machine_bound(config, kinds, baseline, current)
        if skipped:
            notes.append(
                f"latency rules ({', '.join(skipped)}) not gated: {latency_skipped}; "
                "only portable metrics are compared"
            )
        elif kinds:
            notes.append(f"{latency_skipped}; the rules use portable metrics only")
    notes += context_notes(baseline.context, current.context, config, kinds)
    if not base_ids & now_ids and baseline.cases and current.cases:
        notes.append("no case in common: were the tests renamed or moved?")
    comparison = Comparison(verdicts, config, notes, baseline.source, baseline)
    comparison.latency_skipped = latency_skipped
    comparison.kinds = frozenset(c.kind for c in [*baseline.cases, *current.cases])
    return comparison


def _machine_bound(config: GateConfig, kinds: Iterable[str], *runs: Run) -> list[str]:
    """The machine-bound rules that could have judged these runs' cases (an optional metric's
    only when some case has it: first-byte where an answer was streamed)."""
    wanted = set(kinds)
    return [
        r.text
        for r in config.rules
        if not r.metric.portable
        and r.metric.kind in wanted
        and (
            not r.metric.optional
            or any(r.metric.read(c, run) is not None for run in runs for c in run.cases)
        )
    ]


def _compare_case(
    old: Case,
    new: Case,
    base_run: Run,
    now_run: Run,
    config: GateConfig,
    resamples: int,
    machine_differs: bool = False,
    *,
    alternated: bool = False,
) -> CaseVerdict:
    if old.kind != new.kind:
        return CaseVerdict(new.id, NOT_GATED, reason=f"kind changed from {old.kind} to {new.kind}")
    if new.kind not in (KIND_MEASUREMENT, KIND_LOCUST):
        return CaseVerdict(new.id, NOT_GATED, reason=f"the gate does not compare {new.kind} yet")
    changes: list[MetricChange] = []
    missing: list[str] = []
    skipped: list[str] = []
    pooled_notes: dict[str, list[str]] = {}
    for rule in config.rules_for(new.kind):
        metric = rule.metric
        if metric.parts is None:
            base, now = metric.read(old, base_run), metric.read(new, now_run)
            if metric.optional and base is None and now is None:
                continue  # it does not concern this case (first-byte: nothing streamed)
        if machine_differs and not metric.portable:
            if rule.enforced:
                skipped.append(metric.name)
            continue
        if metric.parts is not None:
            found = _compare_parts(rule, metric, old, new, base_run, now_run, config.alpha)
            if found is None and metric.optional:
                continue  # neither side counted it (older records): it does not concern it
            if found is None:
                missing.append(metric.name)
            changes.extend(found or [])
            continue
        if base is None or now is None:
            missing.append(metric.name)
            continue
        short, pooled_note = "", ""
        if metric.sampled and min(len(base.samples), len(now.samples)) < needed(
            metric, config.alpha
        ):
            base, now, short, pooled_note = _pooled(metric, old, new, base_run, now_run, base, now)
        change = compare_values(rule, base, now, config.alpha, resamples)
        unlike = _cpu_unlike(old, new) if metric.name == "cpu" else ""
        if unlike:  # two quantities: not judged, never a bare "same"
            change.unjudged = change.note = unlike
            change.gated = change.regressed = change.improved = False
            change.detectable = None
        if change.unjudged and short:
            change.unjudged = change.note = short  # the gate's bound, not the user's repeat
        elif pooled_note and change.gated and rule.enforced:
            pooled_notes.setdefault(pooled_note, []).append(metric.name)
        busy = None if alternated or metric.name not in WALL_CLOCK else _busier(old, new)
        if busy is not None and change.gated and rule.enforced:
            side, per_cpu, why = busy
            case, run = (new, now_run) if side == "head" else (old, base_run)
            fair = metric.read(_without_machine(case, per_cpu), run)
            if fair is not None and (change.regressed or change.improved):
                b, n = (base, fair) if side == "head" else (fair, now)
                again = compare_values(rule, b, n, config.alpha, 0)
                if again.regressed if change.regressed else again.improved:
                    change.note = f"{why}, which does not explain it"  # judged: it stands
                    busy = None
            if busy is not None:  # not judged, as with too few samples
                change.unjudged = change.note = why
                change.gated = change.regressed = change.improved = False
                change.detectable = None
        changes.append(change)
    notes = [f"{', '.join(names)} {why}" for why, names in pooled_notes.items()]
    if missing:
        notes.append(f"no {', '.join(missing)} ({_missing_reason(new.kind, missing)})")
    parts = {c.part for c in changes if c.rule.metric.name == "structure"}
    if parts and not any(p.startswith("rounds[") for p in parts):
        notes.append(
            "structure: calls only, from the stub's counts (no held probe: rounds not compared)"
        )
    if skipped:
        notes.append(f"{', '.join(skipped)} not compared: the machine differs")
    notes.extend(_setting_notes(old, new))
    weights = _weight_changes(old, new)
    notes = [f"weights: {c}" for c in weights] + notes
    _zero_is_slower(changes)
    if any(c.regressed for c in changes) or any(w.regressed for w in weights):
        verdict = REGRESSION
    elif any(c.improved for c in changes) or weights:
        verdict = IMPROVEMENT
    elif any(c.gated for c in changes):
        verdict = SAME
    else:
        verdict = NOT_GATED
    result = CaseVerdict(new.id, verdict, changes)
    why_weights = _weights_not_compared(old, new)
    if why_weights:  # asked for (`record=m`), not compared: never a silent "same"
        result.extra_unjudged[WEIGHTS_LABEL] = why_weights
    if verdict == NOT_GATED:
        result.reason = _not_gated_reason(changes, missing, skipped)
        if why_weights:
            result.reason += f"; {WEIGHTS_LABEL}: {why_weights}"
    if new.kind == KIND_LOCUST:
        # The table shows one metric; the note carries the others of the row.
        notes.extend(_change_line(c) for c in changes if c is not result.shown)
    result.note = "; ".join(notes)
    return result


#: The timings a busier machine lengthens whatever the code: not gated across two saved runs
#: whose app waited for a CPU unlike (`_busier`). cpu is the app's own time, and the exact
#: counts are counts: they stay gated.
WALL_CLOCK = frozenset({"median", "p95", "first-byte", "efficiency", "overhead"})


def _busier(old: Case, new: Case) -> tuple[str, float, str] | None:
    """("head" or "base": the side the machine made wait, the other side's wait per CPU
    second, why in words), or None. A side was busier when its app waited for a CPU by
    BUSY_WAIT_SHARE of its samples' time beyond what the other side's machine would have
    made it wait (the other's wait per CPU second, times this side's CPU time): code that
    needs more CPU waits more on a loaded machine too, and that wait is the code's. No claim
    when either side has no wait figures (not Linux, an older record). Never used in A/B,
    whose alternated samples saw one machine."""
    base, now = _cpu_waits(old), _cpu_waits(new)
    if base is None or now is None:
        return None
    sides = (
        ("head", now, base, "this run", "the baseline"),
        ("base", base, now, "the baseline", "this run"),
    )
    for side, mine, theirs, where, other in sides:
        (share, used), (other_share, other_used) = mine, theirs
        per_cpu = other_share / other_used if other_used > 0 else 0.0
        if share - used * per_cpu >= BUSY_WAIT_SHARE:
            why = (
                f"the machine was busier in {where}: the app waited for a CPU"
                f" {_percent(share)} of its samples' time against {_percent(other_share)}"
                f" in {other}, {_per_cpu(mine)} per CPU second against {_per_cpu(theirs)}"
            )
            return side, per_cpu, why
    return None


def _cpu_unlike(old: Case, new: Case) -> str:
    """Why the two sides' cpu figures are not the same quantity, or "": they were reckoned
    by different methods (`limits.CPU_METHOD`). A run saved before the probe took its own
    CPU off (no `probe_cpu_per_sample`) counted its watchdog thread and lag ticks in, ~25 ms
    a second of wall time; one saved before `cpu_method` was recorded left the server's own
    timers in, ~0.5 ms a second: against a run without them, cpu would read as an
    improvement the code never made, or hide a regression."""
    methods = {
        side: _cpu_method(case.record) for side, case in (("the baseline", old), ("this run", new))
    }
    if len(set(methods.values())) == 1:
        return ""
    older = min(methods, key=lambda side: methods[side])
    held = (
        "the probe's own CPU (its watchdog and lag ticks)"
        if methods[older] == 0
        else "the server's own timers (about 0.5 ms a second of wall time)"
    )
    return (
        f"{older} was saved by an older pytest-fanout, whose cpu held {held}:"
        " save it again to compare cpu"
    )


def _cpu_method(record: dict[str, Any]) -> int:
    """The record's `cpu_method` (a count: the schema checked it), or 0 or 1 for one saved
    before it was recorded."""
    method = record.get("cpu_method")
    if method is not None:
        return method
    return 1 if "probe_cpu_per_sample" in record else 0


def _without_machine(case: Case, per_cpu: float) -> Case:
    """The case with each sample (and first byte) shortened by the most the busier machine
    can have added to it: its wait for a CPU beyond `per_cpu` seconds per CPU second. A
    change that holds against it is the code's; one that does not may be the machine's."""
    record = dict(case.record)
    waits, cpus = record["app_wait_per_sample"], record["app_cpu_per_sample"]
    extra = [max(0.0, w - c * per_cpu) for w, c in zip(waits, cpus, strict=True)]
    for name in ("samples", "first_byte_per_sample"):
        values = record.get(name)
        if isinstance(values, list) and len(values) == len(extra):
            record[name] = [max(0.0, v - e) for v, e in zip(values, extra, strict=True)]
    return Case(case.id, case.kind, record)


def _cpu_waits(case: Case) -> tuple[float, float] | None:
    """(the app's wait for a CPU, its CPU time), each over its samples' wall time, or None
    when a sample lacks either figure (the wait share is `Measurement.app_wait_share`'s)."""
    m = case.measurement()
    if m is None or m.app_wait_share is None or len(m.app_cpu_per_sample) != len(m.samples):
        return None
    return m.app_wait_share, sum(m.app_cpu_per_sample) / sum(m.samples)


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%" if share < 0.1 else f"{share * 100:.0f}%"


def _per_cpu(figures: tuple[float, float]) -> str:
    share, used = figures
    return f"{share / used:.2g} s" if used > 0 else "no CPU time"


def needed(metric: Metric, alpha: float) -> int:
    """The samples a side `metric` needs to be judged at `alpha` (the rank test's least, or
    the metric's own floor: cpu wants 20)."""
    return max(repeat_needed(alpha, MIN_SAMPLES), metric.min_samples)


def samples_wanted(
    config: GateConfig, head: Measurement, base: Measurement, own: int
) -> tuple[int, bool]:
    """(more samples a side the rules need to judge at all, whether the noise still hides a
    change of a rule's limit): what the A/B sampler takes, one block at a time, for a
    measurement whose test took `own` samples a side (`head` and `base`: those and what the
    sampler took since). Only the rules `own` could not judge are topped up; past their
    count, on while the smallest change the rank test could flag in what was taken is above
    the rule's limit (sized to the noise), within the sampler's bounds."""
    head_case = Case("head", KIND_MEASUREMENT, head.to_dict())
    base_case = Case("base", KIND_MEASUREMENT, base.to_dict())
    head_run, base_run = Run([head_case]), Run([base_case])
    more, noisy = 0, False
    for rule in config.rules_for(KIND_MEASUREMENT):
        metric = rule.metric
        if not (rule.enforced and metric.sampled and metric.parts is None):
            continue
        need = needed(metric, config.alpha)
        if own >= need:
            continue  # the test's own samples judge it: not topped up
        b, n = metric.read(base_case, base_run), metric.read(head_case, head_run)
        if b is None or n is None:
            continue
        have = min(len(b.samples), len(n.samples))
        if have < need:
            more = max(more, need - have)
            continue
        detectable = _detectable(rule, b, n, config.alpha)
        noisy = noisy or detectable is None or detectable > rule.limit
    return more, noisy


def _pool(case: Case) -> dict[str, Any] | None:
    """The samples the A/B gate took itself for this case (`POOL_KEY`), if well formed."""
    pool = case.record.get(POOL_KEY)
    if not isinstance(pool, dict) or not isinstance(pool.get("samples"), list):
        return None
    return pool


def _with_pool(case: Case, pool: dict[str, Any]) -> Case:
    """The case as if its test had also taken the pool's samples (each per-sample list joined
    where both have one value a sample; dropped where not, so no metric reads a mismatch)."""
    record = dict(case.record)
    own, more = len(record.get("samples") or []), len(pool["samples"])
    for name in POOLED:
        mine, theirs = record.get(name) or [], pool.get(name) or []
        if isinstance(mine, list) and isinstance(theirs, list):
            joined = [*mine, *theirs] if (len(mine), len(theirs)) == (own, more) else []
            record[name] = joined if name != "samples" else [*mine, *theirs]
    return Case(case.id, case.kind, record)


def _pooled(
    metric: Metric, old: Case, new: Case, base_run: Run, now_run: Run, base: Values, now: Values
) -> tuple[Values, Values, str, str]:
    """(base, now, why still short, a note) read with the samples the A/B gate took itself
    on fresh processes, when both cases hold them; the values as they were otherwise."""
    pools = _pool(old), _pool(new)
    if pools[0] is None or pools[1] is None:
        return base, now, "", ""
    more_base = metric.read(_with_pool(old, pools[0]), base_run)
    more_now = metric.read(_with_pool(new, pools[1]), now_run)
    short = str(pools[1].get("short") or pools[0].get("short") or "")
    if more_base is None or more_now is None:
        return base, now, short, ""
    fewest = min(len(more_base.samples), len(more_now.samples))
    own = min(len(base.samples), len(now.samples))
    processes = min(_count(pools[0].get("processes")), _count(pools[1].get("processes")))
    note = (
        f"from {fewest} samples a side over {processes + 1} app processes a side (the test"
        f" took {own}; the gate took the rest on {processes} fresh process(es) a side)"
    )
    return more_base, more_now, short, note


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _compare_parts(
    rule: Rule, metric: Metric, old: Case, new: Case, base_run: Run, now_run: Run, alpha: float
) -> list[MetricChange] | None:
    """A metric of several values a case (the structure): one change per part both hold."""
    assert metric.parts is not None
    base, now = metric.parts(old, base_run), metric.parts(new, now_run)
    if base is None or now is None:
        return None
    out = []
    for k in (k for k in now if k in base):
        varied = _varied(metric, k, old, new, base[k], now[k])
        if varied:
            out.append(_unjudged(rule, base[k], now[k], k, varied))
            continue
        one_base, one_now = Values([], base[k].stat), Values([], now[k].stat)
        change = compare_values(rule, one_base, one_now, alpha, 0, part=k)
        if metric.name == "connections" and change.regressed:
            change.hint = _client_per_request(new, k)
        out.append(change)
    return out or None


def _values_text(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _varied(metric: Metric, part: str, old: Case, new: Case, base: Values, now: Values) -> str:
    """Why an exact part cannot be judged: its count differed between one side's own samples
    (a pool closing idle connections on a timer; a limiter whose state outlives the request
    gives [3] to one held probe and [2, 1] to the next), else "". Such a count is no exact
    fact of the code, so neither "same" nor a regression can be said of it."""
    for side, case, values in (("base", old, base), ("head", new, now)):
        if len(set(values.samples)) < 2:
            continue
        if metric.name == "structure":
            name = part[part.index("[") + 1 : -1]
            waves = structure_variants(case.record, name) or _values_text(values.samples)
            return f"the structure varied between samples ({waves}) in the {side}"
        return f"{metric.name} varied in the {side} ({_values_text(values.samples)})"
    return ""


def _unjudged(rule: Rule, base: Values, now: Values, part: str, why: str) -> MetricChange:
    """A change that could not be judged (`why`): shown, never same nor a regression."""
    enforced = rule.enforced
    return MetricChange(
        rule,
        base.stat,
        now.stat,
        rule.change(base.stat, now.stat),
        None,
        None,
        None,
        False,
        False,
        why,
        part,
        gated=False,
        unjudged=why if enforced else "",
    )


def _client_per_request(case: Case, part: str) -> str:
    """ "a client built per request?" when every call of every sample at that upstream came
    on a new connection (the evidence of a client made and dropped per request), else ""."""
    name = part[part.index("[") + 1 : -1]
    opened, calls = connections_lists(case.record).get(name, ([], []))
    if calls and any(calls) and opened == calls:
        return "a client built per request?"
    return ""


def _not_gated_reason(changes: list[MetricChange], missing: list[str], skipped: list[str]) -> str:
    """Why no rule judged a case, from what stood in the way (most telling first)."""
    weak = [c for c in changes if c.rule.enforced and c.note and not c.gated]
    if skipped and not changes:
        return "machine differs: latency not compared, and no portable metric to compare"
    unjudged = [c for c in changes if c.unjudged]
    if unjudged:  # every rule that wanted samples, each with the counts and the repeat to ask
        by_why: dict[str, list[str]] = {}
        for c in unjudged:
            by_why.setdefault(c.unjudged, []).append(c.label)
        return "; ".join(f"{', '.join(labels)}: {why}" for why, labels in by_why.items())
    if weak:
        return f"{weak[0].label}: {weak[0].note}"
    if missing and not changes:
        return "no comparable metric"
    return "no rule judges it"


def _weight_changes(old: Case, new: Case) -> list[Any]:
    """Changes of the critical-path weights both runs recorded (`fanout.critical_path(...,
    record=m)`): portable, judged whatever the machines; a weight rising by half a round
    or more, beyond both intervals, is a regression whatever the rules name."""
    if new.kind != KIND_MEASUREMENT:
        return []
    from pytest_fanout.timeline.portable import weight_changes

    return weight_changes(old.record, new.record)


def _weights_not_compared(old: Case, new: Case) -> str:
    """Why the critical-path weights one or both runs recorded could not be compared (a
    side without them, a weight without an interval), "" when they were or neither has any."""
    if new.kind != KIND_MEASUREMENT:
        return ""
    from pytest_fanout.timeline.portable import weights_not_compared

    return weights_not_compared(old.record, new.record)


def _missing_reason(kind: str, missing: list[str]) -> str:
    if kind != KIND_MEASUREMENT:
        return "no requests"
    why = []
    if "structure" in missing:
        why.append("structure needs a held probe request")
    if {"efficiency", "overhead", "speedup"} & set(missing):
        why.append("efficiency needs n and the upstream delay")
    if "cpu" in missing:
        why.append("cpu needs the probe's CPU samples on both sides")
    if "first-byte" in missing:
        why.append("first-byte needs a streamed answer on both sides")
    if {"median", "p95"} & set(missing):
        why.append("no samples")
    return "; ".join(why) or "not in this record"


def _zero_is_slower(changes: list[MetricChange]) -> None:
    """A Locust row whose completed requests fell to none is a regression, whatever the rules."""
    for c in changes:
        if c.rule.metric.name == "completed" and c.base > 0 and c.now == 0:
            c.regressed, c.improved, c.gated = True, False, True
            c.note = (
                f"no request completed (baseline {c.base:.0f}): a regression whatever the rules"
            )


def _change_line(c: MetricChange) -> str:
    """One change as a line of a note: "rps 52.1/s -> 40.3/s (-22.6%, reported only)"."""
    m = c.rule.metric
    detail = ", ".join(x for x in (c.rule.format_change(c.change), c.note) if x)
    return f"{c.label} {m.format(c.base)} -> {m.format(c.now)} ({detail})"


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
            notes.append(redact(f"{label} changed {a.get(key)} -> {b.get(key)}"))
    return notes


def context_notes(
    base: dict[str, Any],
    now: dict[str, Any],
    config: GateConfig,
    kinds: Iterable[str] | None = None,
) -> list[str]:
    """What differs between the two runs' settings (a warning, not a failure): the NAMES of the
    settings whose values differ (saved runs hold fingerprints of values, never values)."""
    notes = []
    old_settings, new_settings = base.get("settings") or {}, now.get("settings") or {}
    if old_settings != new_settings and (old_settings or new_settings):
        changed, added, removed = [], [], []
        for k in sorted(set(old_settings) | set(new_settings)):
            if k not in old_settings:
                added.append(k)
            elif k not in new_settings:
                removed.append(k)
            elif old_settings[k] != new_settings[k]:
                changed.append(k)
        parts = []
        if changed:
            parts.append(f"changed {', '.join(changed)}")
        if added:
            parts.append(f"only in this run {', '.join(added)}")
        if removed:
            parts.append(f"only in the baseline {', '.join(removed)}")
        notes.append(redact("settings differ (values not shown): " + "; ".join(parts)))
    return notes
