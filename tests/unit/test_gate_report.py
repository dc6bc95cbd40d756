"""The reviewer's Markdown: medians, change, CPU, reasons, commits, and a valid Mermaid chart.

`check_xychart` is a validator of the `xychart-beta` subset the report emits, written from
Mermaid's grammar (packages/mermaid/src/diagrams/xychart/parser/xychart.jison): a quoted
string is `"` then anything but `"` then `"` (no escapes), a number is
`[+-]?(\\d+(\\.\\d+)?|\\.\\d+)` (no exponent), `%%` starts a comment, `;` ends a statement.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_fanout.gate import GateConfig, Run, compare_runs, render_comparison_markdown
from pytest_fanout.gate.ab import merge_measurements
from pytest_fanout.gate.report import chart_label, verdict_reason
from pytest_fanout.gate.stats import power_note, repeat_needed, smallest_p
from pytest_fanout.measurement import Measurement

REPO = Path(__file__).resolve().parents[2]
#: The A/B mode's rules: the defaults and cpu+5%.
AB = GateConfig.from_options(None).for_ab()
STRING = r'"[^"\n]*"'
NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"
LINES = [
    re.compile(r"^xychart-beta$"),
    re.compile(rf"^title {STRING}$"),
    re.compile(rf"^x-axis \[{STRING}(?:, {STRING})*\]$"),
    re.compile(rf"^y-axis {STRING} {NUMBER} --> {NUMBER}$"),
    re.compile(rf"^bar \[{NUMBER}(?:, {NUMBER})*\]$"),
]


def check_xychart(block: str) -> None:
    """Raise AssertionError unless `block` is the emitted subset of Mermaid's xychart-beta."""
    lines = [line.strip() for line in block.strip().splitlines()]
    assert lines[0] == "xychart-beta", lines[0]
    assert "%%" not in block, "%% would start a Mermaid comment"
    kinds = []
    for line in lines:
        outside_quotes = re.sub(STRING, '""', line)
        assert ";" not in outside_quotes, f"';' ends a Mermaid statement: {line}"
        for index, pattern in enumerate(LINES):
            if pattern.match(line):
                kinds.append(index)
                break
        else:
            raise AssertionError(f"not xychart-beta syntax: {line!r}")
    assert kinds[:4] == [0, 1, 2, 3] and set(kinds[4:]) == {4}, kinds
    categories = len(re.findall(STRING, lines[2]))
    low, high = (float(x) for x in re.findall(NUMBER, lines[3].split('"')[-1]))
    assert low < high
    for line in lines[4:]:
        values = [float(x) for x in re.findall(NUMBER, line)]
        assert len(values) == categories, f"{len(values)} bars for {categories} categories"
        assert all(low <= v <= high for v in values), (values, low, high)


def chart_of(markdown: str) -> str:
    match = re.search(r"```mermaid\n(.*?)\n```", markdown, re.S)
    assert match, markdown
    return match.group(1)


def m(
    path: str, median: float, cpu: float, test: str = 'tests/t.py::test_x["q";%%]', k: int = 8
) -> Measurement:
    n = int(path.rsplit("/", 1)[1])
    return Measurement(
        path=path,
        samples=[median * (1 + 0.002 * (i - (k - 1) / 2)) for i in range(k)],
        app_cpu_per_sample=[cpu * (1 + 0.002 * (i - (k - 1) / 2)) for i in range(k)],
        n=n,
        concurrency=n,
        upstream_delay_s=0.1,
        test=test,
    )


def context(commit: str) -> dict:
    return {"git": {"commit": commit, "branch": "x", "dirty": False}}


def test_the_report_shows_ms_cpu_reasons_commits_and_a_valid_chart() -> None:
    base = Run.from_measurements(
        [m("/async/20", 0.110, 0.004), m("/async/50", 0.120, 0.008)], context("a" * 40)
    )
    head = Run.from_measurements(
        [m("/async/20", 0.1185, 0.0040), m("/async/50", 0.160, 0.016)], context("b" * 40)
    )
    comparison = compare_runs(base, head, AB, same_machine=True)
    markdown = render_comparison_markdown(comparison, head)
    check_xychart(chart_of(markdown))
    assert "Base commit: `aaaaaaaaaaaa`; head commit: `bbbbbbbbbbbb`." in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    # Every gated metric of a case has its row of evidence: base, head, change, p, catches.
    case50 = next(i for i, c in enumerate(cells) if c[0].endswith("/async/50`"))
    assert cells[case50] == [
        '`tests/t.py::test_x["q";%%] /async/50`',
        "median",
        "120 ms",
        "160 ms",
        "+33.3%",
        "7.8e-05",
        "catches changes of at least 10%",
        "**regression** :x: (not gated: cpu)",
        "median worse beyond median+10% (+33.3%, p=7.8e-05); not gated: cpu (not judged with 8"
        " samples a side: cpu needs 20 (over fewer, two processes of the same code differ more"
        " than the test sees); use repeat &gt;= 20)",
    ]
    assert [c[1] for c in cells[case50 + 1 : case50 + 4]] == ["p95", "efficiency", "cpu"]
    assert cells[case50 + 3][2:5] == ["8 ms", "16 ms", "+100.0%"]
    # 7.7% slower, beyond the noise but within the 10% limit: said so, not just "same".
    case20 = next(c for c in cells if c[0].endswith("/async/20`"))
    # 8 samples a side: the cpu rule could not judge, and the verdict says so apart.
    assert case20[7] == "same (not gated: cpu)"
    assert case20[8].startswith(
        "median slower, but within the median+10% limit (+7.7%, p=7.8e-05); not gated: cpu ("
    )


def test_chart_labels_stay_inside_mermaid_quotes() -> None:
    label = chart_label('t.py::test_a["x"]%%y /p\n')
    assert '"' not in label and "%%" not in label and "\n" not in label
    assert label.startswith("test_a[")


def test_power_is_honest() -> None:
    assert smallest_p(5, 5) == pytest.approx(1 / 252)
    assert repeat_needed(0.01) == 5
    assert power_note(3, 3, 0.01) == (
        "cannot be flagged with 3 samples a side at alpha 0.01; use repeat >= 5"
    )
    assert power_note(5, 5, 0.01) == ""
    base = Run.from_measurements([m("/async/20", 0.110, 0.004, k=3)])
    head = Run.from_measurements([m("/async/20", 0.300, 0.040, k=3)])
    comparison = compare_runs(base, head, AB, same_machine=True)
    [v] = comparison.verdicts
    assert v.verdict == "not gated"
    # Every rule that could not judge it is named, with the counts and the repeat to ask.
    assert verdict_reason(v, 0.01) == (
        "median, p95, efficiency, cpu: cannot be flagged with 3 samples a side at alpha 0.01;"
        " use repeat >= 5"
    )
    assert comparison.exit_status == 6


def test_the_cpu_rule_flags_cpu_alone() -> None:
    """Same wall time, 20% more CPU per request beyond the noise: slower on cpu+5%."""
    base = Run.from_measurements([m("/async/20", 0.110, 0.0040, k=20)])
    head = Run.from_measurements([m("/async/20", 0.110, 0.0048, k=20)])
    [v] = compare_runs(base, head, AB, same_machine=True).verdicts
    assert v.verdict == "regression" and v.shown.rule.text == "cpu+5%"
    # With fewer than 20 samples a side the CPU is shown, not judged, and the note says why.
    few = compare_runs(
        Run.from_measurements([m("/async/20", 0.110, 0.0040, k=10)]),
        Run.from_measurements([m("/async/20", 0.110, 0.0048, k=10)]),
        AB,
        same_machine=True,
    )
    [v] = few.verdicts
    cpu = next(c for c in v.changes if c.rule.metric.name == "cpu")
    assert v.verdict == "same" and not cpu.gated and not cpu.regressed
    assert "not judged with 10 samples a side: cpu needs 20" in cpu.note
    # Without the probe's CPU on one side the case is still judged on the rest.
    old = Run.from_measurements(
        [Measurement(**{**m("/async/20", 0.11, 0.004).__dict__, "app_cpu_per_sample": []})]
    )
    [v] = compare_runs(old, head, AB, same_machine=True).verdicts
    assert v.verdict == "same" and "cpu needs the probe's CPU samples on both sides" in v.note


def test_alternated_single_samples_merge_into_one_measurement() -> None:
    parts = [m("/async/20", 0.1 + i / 100, 0.004, k=1) for i in range(3)]
    for part in parts:
        part.app_errors = 1
        part.upstream_requests_per_sample = [20]
    merged = merge_measurements(parts)
    assert merged.samples == [p.samples[0] for p in parts]
    assert merged.upstream_requests_per_sample == [20, 20, 20]
    assert merged.app_errors == 3 and merged.n == 20 and merged.path == "/async/20"


def test_the_workflow_runs_ab_against_the_merge_base_into_the_step_summary() -> None:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "perf-gate.yml").read_text())
    steps = workflow["jobs"]["ab"]["steps"]
    runs = "\n".join(step.get("run", "") for step in steps)
    assert "git merge-base" in runs and '--fanout-ab="$FANOUT_AB_BASE"' in runs
    assert "--fanout-report-md=reports/ab.md" in runs
    assert 'cat reports/ab.md >> "$GITHUB_STEP_SUMMARY"' in runs
    checkout = steps[0]
    assert checkout["with"]["fetch-depth"] == 0  # the merge-base is in the clone


def test_the_json_report_holds_the_evidence_of_every_gated_metric() -> None:
    base = Run.from_measurements([m("/async/20", 0.110, 0.0040, k=20)])
    head = Run.from_measurements([m("/async/20", 0.118, 0.0048, k=20)])
    data = compare_runs(base, head, AB, same_machine=True).to_dict()
    [case] = data["cases"]
    assert case["verdict"] == "regression" and case["gated"] is True and case["reason"] == ""
    by_metric = {metric["metric"]: metric for metric in case["metrics"]}
    assert set(by_metric) == {"median", "p95", "efficiency", "cpu"}
    for metric in by_metric.values():
        for key in ("baseline", "now", "change", "p_value", "detectable_change", "catches"):
            assert metric[key] is not None, (metric["metric"], key)
    cpu = by_metric["cpu"]  # the CPU rule has its p-value and what it can catch, like the rest
    assert cpu["p_value"] < 0.01 and cpu["catches"].startswith("catches changes of at least")
    assert by_metric["median"]["detectable_change"] >= 0.10  # never below its limit


def test_a_merged_ab_measurement_keeps_one_structure() -> None:
    from pytest_fanout.gate.ab import _merge

    # The wave sizes of one held request: [20] and [20] are one wave, never [20, 20].
    assert _merge("structure", [{"default": [20]}, {"default": [20]}]) == {"default": [20]}
    assert _merge("structure", [None, None]) is None
