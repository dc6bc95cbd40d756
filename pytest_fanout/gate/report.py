"""The gate's words: the verdict table, REGRESSION lines, Markdown for a pull request.

Why apart: what a CI log and a reviewer read is formatting only; the numbers
come from `gate_verdict`, and a report that cannot be written is one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_fanout._table import render_markdown, render_text
from pytest_fanout.gate.metrics import Metric
from pytest_fanout.gate.runs import GateError, Run, error_reason
from pytest_fanout.gate.verdict import FASTER, SLOWER, Comparison, MetricChange

HEADERS = ("case", "metric", "baseline", "now", "change", "p", "verdict")


def _format(metric: Metric, value: float) -> str:
    return metric.format(value)


def _format_change(change: MetricChange) -> str:
    return change.rule.format_change(change.change)


def _format_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


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
                _format_p(c.p_worse if c.regressed or not c.improved else c.p_better),
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
                noise = "no noise test" if c.p_worse is None else f"p={c.p_worse:.2g}"
                lines.append(
                    f"REGRESSION {v.id}: {m.name} {_format(m, c.base)} -> {_format(m, c.now)} "
                    f"({_format_change(c)}, limit {c.rule.text}, {noise})"
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
    """The run's own numbers (no baseline): for a main-branch summary.

    A Locust row shows its requests as "samples", and Locust's p50 and p95.
    """
    rows = []
    for case in run.cases:
        row = case.load_row()
        if row is not None:  # a Locust row: requests, p50 and p95 of its histogram
            rows.append(
                [case.id, row.requests, f"{row.p50_ms:.1f} ms", f"{row.p95_ms:.1f} ms"] + ["-"] * 3
            )
            continue
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
        raise GateError(f"cannot write {path}: {error_reason(exc)}") from None
