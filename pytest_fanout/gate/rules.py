"""The --fanout-fail-on rules and the gate's settings: parsed once, refused with one line.

Why apart: the rule syntax is the user's interface to the gate; a typo must
stop the run before any test, with a line naming what there is. A rule only
judges cases of its metric's kind; a Locust metric no rule names is still
compared and shown ("reported only"), never failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pytest_fanout.gate.metrics import METRICS, Metric
from pytest_fanout.gate.runs import GateError

#: Rules used when --fanout-fail-on is not given. For every measurement, with or without n:
#: the wall time's median and p95 (machine-bound: in A/B always, against a saved baseline only
#: from the same machine fingerprint), and for an answer the app streamed its first byte too;
#: the exact structure (any machine); with n and the upstream delay, the portable efficiency;
#: where a case measured them, the exact orphaned calls and calls after a hang-up (+0); at an
#: upstream with a limit, the exact calls answered 429 and retries (+0); per upstream, the
#: exact new connections a request opens (+0; not gated where a side's count varied).
#: For Locust rows: a p95 rise and new failures, tested against the noise, and completed
#: requests halving (or falling to none).
#: The limits are chosen from benchmarks/gate_validation.py (docs/gating.md).
DEFAULT_FAIL_ON = (
    "median+10%,p95+25%,first-byte+10%,structure+0,orphaned+0,after_disconnect+0,"
    "rejected+0,retries+0,connections+0,"
    "efficiency-15%,load-p95+25%,fail-ratio+0.01,completed-50%"
)
#: Added in A/B mode (--fanout-ab) unless the rules name cpu: the app's CPU per request is exact
#: and sensitive, but comparable only on the same machine in the same run.
AB_RULE = "cpu+5%"
#: Limits that say "moved" for the Locust metrics no rule names: shown, never failed.
REPORTED_RULES = "load-p95+25%,rps-20%,fail-ratio+0.01,completed-50%"
#: One-sided significance level of the Mann-Whitney test.
DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class Rule:
    """Fail when `metric` gets worse by more than `limit` (relative when `percent`)."""

    metric: Metric
    limit: float
    percent: bool
    text: str
    #: False for a reported-only rule: its change is shown, never decides a verdict.
    enforced: bool = True

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

    def format_amount(self, amount: float) -> str:
        """A size of change in this rule's units, unsigned: "8%", "1.20 ms", "0.010", "1"."""
        return self._in_units(amount, percent=".3g", ms=".3g", count="g", plain=".3g")

    def format_limit(self) -> str:
        return self.format_amount(self.limit)

    def format_change(self, change: float | None) -> str:
        """The change as the reports show it: a percentage, milliseconds, or a plain number."""
        if change is None:
            return "-"
        return self._in_units(change, percent="+.1f", ms="+.2f", count="+g", plain="+.3f")

    def _in_units(self, value: float, *, percent: str, ms: str, count: str, plain: str) -> str:
        """`value` in this rule's units, with the format spec given for each: a percentage
        (percent rules), milliseconds (times), a count, or a plain number."""
        if self.percent:
            return f"{value * 100:{percent}}%"
        if self.metric.unit == "s":
            return f"{value * 1000:{ms}} ms"
        return format(value, count if self.metric.unit == "count" else plain)


#: Which metric units take which absolute limits, for the one-line refusals.
_UNIT_NAMES = {"ratio": "a ratio", "rps": "a rate (requests/s)", "count": "a count"}

#: METRIC (letters, digits, "_" or "-"; the shortest name that leaves a sign, a number and a unit)
_RULE = re.compile(
    r"^(?P<metric>[a-z][a-z0-9_-]*?)\s*(?P<sign>[+-])\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>%|ms|s|abs)?$"
)
#: Ratios bounded by 0 and 1: a plain number on them is an absolute amount only below 1.
_UNIT_RATIOS = ("efficiency", "fail-ratio")
#: Largest limit a rule takes (a 1e308% rule is a typo, not a policy).
MAX_LIMIT = 1e6


def parse_fail_on(text: str) -> list[Rule]:
    """Parse "efficiency-10%,overhead+1ms" (or "none"); a mistake is a one-line GateError.

    Each rule is METRIC, the sign of the bad direction (- for metrics where
    higher is better, + where lower is better) and a limit: a percentage of
    the baseline, or an absolute amount (ms or s for times, a plain number for
    ratios and requests/s): "load-p95+25%", "rps-20%", "fail-ratio+0.01".
    "none" means: report, never fail.
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
        if number > MAX_LIMIT:
            raise GateError(f"fail-on rule {part!r}: the limit is past {MAX_LIMIT:g}")
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
                noun = _UNIT_NAMES.get(metric.unit, "not a time")
                raise GateError(
                    f"fail-on rule {part!r}: {metric.name} is {noun}, give a % or a plain number"
                )
            rules.append(Rule(metric, number / 1000 if unit == "ms" else number, False, part))
        else:
            if metric.unit == "s":
                raise GateError(f"fail-on rule {part!r}: give {metric.name} a unit (% or ms or s)")
            if metric.unit == "ratio" and unit != "abs":
                _check_plain_ratio(part, metric, match["number"], number)
            rules.append(Rule(metric, number, False, part))
    if not rules:
        raise GateError(f"no rule in --fanout-fail-on {text!r}")
    seen = set()
    for rule in rules:
        if rule.metric.name in seen:
            raise GateError(f"fail-on names {rule.metric.name} twice: keep one rule per metric")
        seen.add(rule.metric.name)
    return rules


def _check_plain_ratio(part: str, metric: Metric, text: str, number: float) -> None:
    """A plain number on a ratio is an absolute amount: refused where it cannot be meant so."""
    sign = metric.bad_sign
    if metric.name in _UNIT_RATIOS and number < 1:
        return  # "fail-ratio+0.01": an absolute amount of a 0-1 ratio, as documented
    if metric.name in _UNIT_RATIOS:
        raise GateError(
            f"fail-on rule {part!r}: {metric.name} is a ratio between 0 and 1, so an absolute "
            f"change of {text} can never happen; write {metric.name}{sign}{text}% for a "
            f"relative change, or {metric.name}{sign}{number / 100:g}abs for an absolute one"
        )
    raise GateError(
        f"fail-on rule {part!r}: {metric.name} is a ratio; write {metric.name}{sign}{text}% "
        f"for a relative change, or {metric.name}{sign}{text}abs for an absolute one"
    )


def parse_alpha(text: str | float) -> float:
    """The significance level: a number strictly between 0 and 0.5."""
    try:
        alpha = float(text)
    except (TypeError, ValueError):
        raise GateError(f"alpha {text!r} is not a number") from None
    if not 0 < alpha < 0.5:
        raise GateError(f"alpha {text!r} must be between 0 and 0.5 (for example 0.01)")
    return alpha


@lru_cache(maxsize=1)
def _reported_rules() -> tuple[Rule, ...]:
    return tuple(
        Rule(r.metric, r.limit, r.percent, r.text, enforced=False)
        for r in parse_fail_on(REPORTED_RULES)
    )


@dataclass(frozen=True)
class GateConfig:
    """The rules that decide verdicts, whether a regression fails, and the test's level."""

    rules: list[Rule]
    fail: bool = True
    alpha: float = DEFAULT_ALPHA
    #: A run in which no case was gated passes (else it fails with EXIT_NOT_GATED).
    allow_ungated: bool = False

    @classmethod
    def from_options(
        cls, fail_on: str | None, alpha: str | float | None = None, allow_ungated: bool = False
    ) -> GateConfig:
        """From the option strings; "none" keeps the default rules for verdicts, never fails."""
        rules = parse_fail_on(fail_on or DEFAULT_FAIL_ON)
        fail = bool(rules)
        if not rules:
            rules = parse_fail_on(DEFAULT_FAIL_ON)
        alpha_value = parse_alpha(DEFAULT_ALPHA if alpha is None else alpha)
        return cls(rules, fail, alpha_value, bool(allow_ungated))

    def for_ab(self) -> GateConfig:
        """The same settings with the CPU rule on (A/B: base and head on one machine, one run)."""
        if any(r.metric.name == "cpu" for r in self.rules):
            return self
        rules = [*self.rules, *parse_fail_on(AB_RULE)]
        return GateConfig(rules, self.fail, self.alpha, self.allow_ungated)

    def rules_for(self, kind: str) -> list[Rule]:
        """The rules that judge cases of `kind`, then reported-only rules for its other metrics."""
        mine = [r for r in self.rules if r.metric.kind == kind]
        named = {r.metric.name for r in mine}
        reported = _reported_rules()
        shown = [r for r in reported if r.metric.kind == kind and r.metric.name not in named]
        return mine + shown

    def describe(self, kinds: Iterable[str] | None = None) -> str:
        """The rules in one line; with `kinds`, only those that judge cases of these kinds."""
        wanted = set(kinds) if kinds else None
        shown = [r for r in self.rules if wanted is None or r.metric.kind in wanted]
        rules = ",".join(r.text for r in shown or self.rules)
        what = f"fail on {rules}" if self.fail else f"report only ({rules})"
        unsampled = [r.metric.name for r in shown or self.rules if not r.metric.sampled]
        exact = [r.metric.name for r in shown or self.rules if r.metric.exact]
        unsampled = [name for name in unsampled if name not in exact]
        tail = f"; {', '.join(exact)} exact" if exact else ""
        tail += f"; {', '.join(unsampled)} by the limit alone" if unsampled else ""
        return f"{what}, when beyond the noise (Mann-Whitney, one-sided p < {self.alpha:g}){tail}"
