"""The gate's words: the verdict table, REGRESSION lines, Markdown for a pull request.

Why apart: what a CI log and a reviewer read is formatting only; the numbers
come from `gate_verdict`, and a report that cannot be written is one line.
"""

from __future__ import annotations

import os
from typing import Any

from pytest_fanout import artifacts
from pytest_fanout.artifacts import (
    Markdown,
    escape_markdown,
    markdown_code,
    render_markdown,
    render_text,
)
from pytest_fanout.artifacts import mask_text as redact
from pytest_fanout.gate.metrics import Metric
from pytest_fanout.gate.runs import GateError, Run, error_reason
from pytest_fanout.gate.verdict import (
    IMPROVEMENT,
    NOT_GATED,
    REGRESSION,
    VERDICTS,
    CaseVerdict,
    Comparison,
    MetricChange,
    exact_first,
)

#: The evidence table: one row per metric that judged a case (base, head, change, the noise
#: test's p-value, the smallest change it could have caught), the case's verdict on its first.
HEADERS = ("case", "metric", "base", "head", "change", "p", "catches", "verdict")


def _format(metric: Metric, value: float) -> str:
    return metric.format(value)


def _format_change(change: MetricChange) -> str:
    return change.rule.format_change(change.change)


def _format_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def evidence(v: CaseVerdict) -> list[MetricChange]:
    """The changes to show for a case: every enforced rule that was computed (gated, or why it
    could not flag: too few samples, a zero baseline), deciding ones first, then gated ones;
    for a case with none, the reported-only changes."""
    enforced = [c for c in v.changes if c.rule.enforced or c.gated]
    shown = enforced or list(v.changes)
    return sorted(shown, key=lambda c: (not c.regressed, not c.improved, not c.gated, _timing(c)))


def _timing(c: MetricChange) -> bool:
    """Among the deciding changes, a timing's comes after an exact count's (true anywhere)."""
    return (c.regressed or c.improved) and not c.rule.metric.exact


def verdict_rows(comparison: Comparison) -> list[list[str]]:
    """Per case, one row per metric of `evidence`; the case and its verdict on the first."""
    return [row for v in comparison.verdicts for row in _case_rows(v, v.id, [v.shown_verdict])]


def _case_rows(v: CaseVerdict, case: str, closing: list[str]) -> list[list[str]]:
    """The evidence rows of one case, one per metric of `evidence` (dashes when none): the
    `case` cell and the `closing` cells (its verdict...) on the first row only."""
    changes = evidence(v)
    if not changes:
        return [[case, "-", "-", "-", "-", "-", "-", *closing]]
    blank = [""] * len(closing)
    return [
        [
            case if index == 0 else "",
            c.label,
            _format(c.rule.metric, c.base),
            _format(c.rule.metric, c.now),
            _format_change(c),
            _format_p(c.p_value),
            c.catches(),
            *(closing if index == 0 else blank),
        ]
        for index, c in enumerate(changes)
    ]


def regression_lines(comparison: Comparison) -> list[str]:
    """One line per regressed case, the line a CI log and a PR reviewer read first."""
    lines = []
    for v in comparison.regressions:
        reasons = [_reason(c) for c in exact_first(v.changes) if c.regressed]
        if reasons:  # the exact counts first (true on any machine), then the timings
            lines.append(redact(f"REGRESSION {v.id}: {'; '.join(reasons)}"))
        else:  # no metric regressed: the critical-path weights did (verdict._weight_changes)
            lines.append(redact(f"REGRESSION {v.id}: {v.note.split('; ')[0]}"))
    return lines


def _reason(c: MetricChange) -> str:
    """One regressed rule: "structure rounds[meteo] 1 -> 5 (+4, limit structure+0, exact)"."""
    m = c.rule.metric
    noise = "exact" if m.exact else ("no noise test" if c.p_worse is None else f"p={c.p_worse:.2g}")
    hint = f" ({c.hint})" if c.hint else ""
    return (
        f"{c.label} {_format(m, c.base)} -> {_format(m, c.now)}{hint} "
        f"({_format_change(c)}, limit {c.rule.text}, {noise})"
    )


def summary_line(comparison: Comparison) -> str:
    """ "fanout gate passed: 3 same, 1 not gated" or FAILED, with why when nothing was gated."""
    counts = comparison.counts()
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    head = "FAILED" if comparison.failed else "passed"
    by_count: dict[int, list[str]] = {}  # "not gated: median, p95 in 1": one clause a count
    judged = {}  # only of the gated cases: a case not gated at all is counted as such
    for v in comparison.verdicts:
        for label in v.unjudged_by_label if v.gated else ():
            judged[label] = judged.get(label, 0) + 1
    for label, n in judged.items():
        by_count.setdefault(n, []).append(label)
    parts += [f"not gated: {', '.join(labels)} in {n}" for n, labels in by_count.items()]
    line = f"fanout gate {head}: " + (", ".join(parts) or "no cases")
    if comparison.nothing_gated:
        accepted = " (accepted: --fanout-allow-ungated)" if comparison.config.allow_ungated else ""
        line += f"; {comparison.why_not_gated()}{accepted}"
    return redact(line)


def case_detail(v: CaseVerdict) -> str:
    """The reason of a case that is not gated, then its notes and its shown metric's note."""
    unjudged = v.unjudged_note if v.gated else ""  # a case not gated says it in its reason
    parts = [v.reason, unjudged, v.note] + [c.note for c in evidence(v)[:1]]
    return "; ".join(dict.fromkeys(p for p in parts if p))


def render_comparison_text(comparison: Comparison) -> str:
    """The terminal's evidence table, the reasons and notes, and a one-line summary."""
    lines = [render_text(HEADERS, verdict_rows(comparison))]
    for v in comparison.verdicts:
        detail = case_detail(v)
        if detail:
            lines.append(f"  {v.id}: {detail}")
    lines.extend(f"note: {n}" for n in comparison.notes)
    lines.append(f"rules: {comparison.describe()}")
    lines.append(summary_line(comparison))
    return redact("\n".join(lines))


def render_comparison_markdown(comparison: Comparison, current: Run | None = None) -> str:
    """A PR comment / $GITHUB_STEP_SUMMARY section a reviewer reads at a glance: the headline,
    per case every metric that judged it (base, head, change, p, what it catches) and the
    verdict with its reason, both commits, and a Mermaid bar chart of base against head."""
    icon = ":x:" if comparison.failed else ":white_check_mark:"
    lines = [
        f"### {icon} pytest-fanout regression gate",
        "",
        escape_markdown(summary_line(comparison)),
        "",
    ]
    regressions = regression_lines(comparison)
    if regressions:
        lines += [f"- {markdown_code(line)}" for line in regressions] + [""]
    base_run, head_run = comparison.baseline_run, current
    rows = []
    for v in comparison.verdicts:
        closing = [_verdict_md(v), verdict_reason(v, comparison.config.alpha)]
        rows += _case_rows(v, markdown_code(v.id), closing)
    lines += [render_markdown(REVIEW_HEADERS, rows), ""]
    chart = mermaid_chart(comparison, base_run, head_run)
    if chart:
        lines += ["```mermaid", chart, "```", ""]
    lines += _regressed_waterfalls(comparison, base_run, head_run)
    notes = [
        f"{markdown_code(v.id)}: {escape_markdown(v.note)}" for v in comparison.verdicts if v.note
    ]
    notes += [escape_markdown(n) for n in comparison.notes]
    if notes:
        lines += ["<details><summary>notes</summary>", ""]
        lines += [f"- {n}" for n in notes] + ["", "</details>", ""]
    base = (
        markdown_code(comparison.baseline_source) if comparison.baseline_source else "the baseline"
    )
    lines.append(f"Compared with {base}: {escape_markdown(comparison.describe())}.")
    lines.append(f"Base commit: {_commit(base_run)}; head commit: {_commit(head_run)}.")
    return redact("\n".join(lines) + "\n")


REVIEW_HEADERS = ("case", "metric", "base", "head", "change", "p", "catches", "verdict", "why")


def _regressed_waterfalls(
    comparison: Comparison, base_run: Run | None, head_run: Run | None
) -> list[str]:
    """Each regressed case's waterfall, base and head, where the runs recorded one."""
    from pytest_fanout.timeline.portable import waterfall_markdown

    lines = []
    for v in comparison.regressions:
        base = _record(base_run, v.id)
        head = _record(head_run, v.id)
        block = waterfall_markdown(base, head) if base or head else ""
        if block:
            lines += [markdown_code(v.id), "", block, ""]
    return lines


def _record(run: Run | None, cid: str) -> dict[str, Any]:
    for case in run.cases if run is not None else ():
        if case.id == cid:
            return case.record
    return {}


def _commit(run: Run | None) -> str:
    git = (run.context.get("git") if run is not None else None) or {}
    commit = git.get("commit")
    if not commit:
        return "unknown"
    return f"`{commit[:12]}`" + (" (uncommitted changes)" if git.get("dirty") else "")


def case_numbers(run: Run | None, cid: str) -> tuple[float | None, float | None]:
    """(median in seconds, CPU per request in seconds) of a case; a Locust row's p50."""
    case = run.case(cid) if run is not None else None
    if case is None:
        return None, None
    row = case.load_row()
    if row is not None:
        return (row.p50_ms / 1000 if row.requests else None), None
    m = case.measurement()
    if m is None or not m.samples:
        return None, None
    return m.median_s, m.cpu_per_request_s


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def verdict_reason(v: CaseVerdict, alpha: float) -> str:
    """Why the verdict: beyond which limit, or a significant move WITHIN the limit (which is
    not "same"), or within the noise, or why the case was not gated; then the rules that
    could not judge it, apart (a "same" is never said of what was not judged)."""
    if v.verdict == NOT_GATED:
        return v.reason
    why = _judged_reason(v, alpha)
    return "; ".join(p for p in (why, v.unjudged_note) if p)


def _judged_reason(v: CaseVerdict, alpha: float) -> str:
    """Why a gated case got its word, from the rules that judged it."""
    c = v.shown
    if c is None:
        return v.note
    if c.regressed or c.improved:
        way = "worse" if c.regressed else "better"
        noise = (
            "exact"
            if c.rule.metric.exact
            else ("no noise test" if c.p_value is None else f"p={_format_p(c.p_value)}")
        )
        return f"{c.label} {way} beyond {c.rule.text} ({_format_change(c)}, {noise})"
    for change in v.changes:
        if not change.gated or change.change is None:
            continue
        for way, p in (("slower", change.p_worse), ("faster", change.p_better)):
            if p is not None and p < alpha:
                if change.rule.metric.higher_is_better:
                    way = {"slower": "worse", "faster": "better"}[way]
                return (
                    f"{change.label} {way}, but within the {change.rule.text} limit "
                    f"({_format_change(change)}, p={_format_p(p)})"
                )
    if c.unjudged:  # said apart: the reason is a rule that judged the case
        c = next((x for x in v.changes if x.gated), c)
    if c.note and not c.unjudged:
        return c.note
    return f"no change beyond the noise (p={_format_p(c.p_worse)})"


#: Most cases the chart shows (a chart of hundreds of bars reads as noise).
CHART_CASES = 20


def chart_label(cid: str) -> str:
    """A short x-axis label: the test's name and the path, safe inside Mermaid's quotes
    (no double quote, no newline, no "%%" comment marker)."""
    test, _, rest = cid.partition(" ")
    name = test.split("::")[-1]
    label = f"{name} {rest}".strip()
    label = label.replace('"', "'").replace("\n", " ").replace("\r", " ")
    while "%%" in label:
        label = label.replace("%%", "%")
    return label[:60]


def _number(value: float) -> str:
    """A number as Mermaid's lexer reads it: digits and a point, never an exponent."""
    return f"{value:.2f}"


def mermaid_chart(comparison: Comparison, base_run: Run | None, head_run: Run | None) -> str:
    """A Mermaid `xychart-beta` bar chart: per case the base median, then the head's (ms)."""
    labels, base_bars, head_bars = [], [], []
    for v in comparison.verdicts:
        base, _ = case_numbers(base_run, v.id)
        head, _ = case_numbers(head_run, v.id)
        if base is None or head is None:
            continue
        labels.append(chart_label(v.id))
        base_bars.append(base * 1000)
        head_bars.append(head * 1000)
        if len(labels) == CHART_CASES:
            break
    if not labels:
        return ""
    top = max(base_bars + head_bars) * 1.1 or 1.0
    return "\n".join(
        [
            "xychart-beta",
            '    title "Median per case, ms: base (first bar) vs head (second bar)"',
            "    x-axis [" + ", ".join(f'"{label}"' for label in labels) + "]",
            f'    y-axis "median (ms)" 0 --> {_number(top)}',
            "    bar [" + ", ".join(_number(x) for x in base_bars) + "]",
            "    bar [" + ", ".join(_number(x) for x in head_bars) + "]",
        ]
    )


def _verdict_md(v: CaseVerdict) -> str:
    """The verdict word, emphasised for a regression (the word itself is the same everywhere),
    with the rules that could not judge the case: "same (not gated: cpu)"."""
    assert v.verdict in VERDICTS
    word = {REGRESSION: f"**{REGRESSION}** :x:", IMPROVEMENT: f"{IMPROVEMENT} :rocket:"}.get(
        v.verdict, v.verdict
    )
    extra = v.shown_verdict[len(v.verdict) :]
    return Markdown(word + escape_markdown(extra))


def measurement_rows(run: Run) -> list[list[Any]]:
    """The run's own numbers (no baseline): for a main-branch summary.

    A Locust row shows its requests as "samples", and Locust's p50 and p95.
    """
    rows = []
    for case in run.cases:
        row = case.load_row()
        if row is not None:  # a Locust row: requests, p50 and p95 of its histogram
            rows.append(
                [case.id, row.requests, f"{row.p50_ms:.1f} ms", f"{row.p95_ms:.1f} ms"] + ["-"] * 4
            )
            continue
        m = case.measurement()
        if m is None or not m.samples:
            rows.append([case.id, case.kind, "-", "-", "-", "-", "-", "-"])
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
                _ms(m.cpu_per_request_s),
            ]
        )
    return rows


RUN_HEADERS = (
    "case",
    "samples",
    "median",
    "p95",
    "ideal",
    "efficiency",
    "overhead/call",
    "CPU/request",
)


def render_run_markdown(run: Run) -> str:
    """Markdown for a run without a baseline (main's own measurements)."""
    lines = ["### pytest-fanout measurements", ""]
    lines.append(render_markdown(RUN_HEADERS, measurement_rows(run)) if run.cases else "No cases.")
    return "\n".join(lines) + "\n"


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a report atomically, credentials masked; failure is one line."""
    try:
        artifacts.write_text(path, text)
    except OSError as exc:
        raise GateError(f"cannot write {path}: {error_reason(exc)}") from None


def write_json(path: str | os.PathLike[str], data: Any, indent: int = 1) -> None:
    """Write a JSON report atomically, credentials masked; failure is one line."""
    try:
        artifacts.write_json(path, data, indent=indent)
    except OSError as exc:
        raise GateError(f"cannot write {path}: {error_reason(exc)}") from None
