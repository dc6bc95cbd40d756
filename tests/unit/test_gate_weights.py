"""The gate never says "same" of critical-path weights it could not compare.

A test that records weights (`fanout.critical_path(..., record=m)`) asked for them to be
gated. When a side has none, or a weight without an interval (the experiment's budget was
spent after too few runs), `weight_changes` has nothing to say; the case then reads
"same (not gated: critical-path weights)" with why, everywhere the rules that could not
judge are listed, and the summary counts it apart. Made-up records: no server, no clock.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_fanout.gate import (
    GateConfig,
    Run,
    compare_runs,
    render_comparison_markdown,
    render_comparison_text,
)
from pytest_fanout.gate.report import summary_line
from pytest_fanout.measurement import Measurement
from pytest_fanout.timeline.portable import weights_not_compared

TEST = "tests/t.py::test_two_sequential_calls"
WORDS = "critical-path weights"
#: 20 samples of ~43 ms, the same on both sides: every rule judges them and finds nothing.
SAMPLES = [0.043 * (1 + 0.002 * (i % 5)) for i in range(20)]
NO_INTERVAL = (
    "the baseline's weight for 'default' has no interval "
    "(too few runs: 9 of 16 in 4.0 s; raise budget_s)"
)


def measured(weight: float | None, half_width: float | None, *, recorded: bool = True):
    m = Measurement(path="/sync/2", samples=list(SAMPLES), test=TEST)
    if recorded:
        target = {"upstream": "default", "route": "", "weight": weight, "half_width": half_width}
        m.critical_path = {"runs": 9, "elapsed_s": 4.01, "targets": [target]}
    return m


def compare(base: Measurement, head: Measurement):
    runs = Run.from_measurements([base]), Run.from_measurements([head])
    return compare_runs(*runs, GateConfig.from_options(None), same_machine=True)


def everything_said(comparison: Any) -> str:
    """The terminal's text, the Markdown and the JSON: where the words must (not) be."""
    return "\n".join(
        [
            render_comparison_text(comparison),
            render_comparison_markdown(comparison),
            json.dumps(comparison.to_dict()),
        ]
    )


def test_a_baseline_weight_without_interval_is_not_gated_with_why() -> None:
    # The head is a round worse, which no interval lets the gate see: not a plain "same".
    comparison = compare(measured(2.0, None), measured(3.0, 0.1))
    (case,) = comparison.verdicts
    assert case.verdict == "same" and case.gated
    assert case.shown_verdict == f"same (not gated: {WORDS})"
    assert case.unjudged_note == f"not gated: {WORDS} ({NO_INTERVAL})"
    assert comparison.not_judged_counts() == {WORDS: 1}
    line = summary_line(comparison)
    assert line == f"fanout gate passed: 1 same, not gated: {WORDS} in 1"
    assert not comparison.failed and comparison.exit_status == 0

    text = render_comparison_text(comparison)
    assert f"same (not gated: {WORDS})" in text and NO_INTERVAL in text
    assert text.splitlines()[-1] == line
    markdown = render_comparison_markdown(comparison)
    (row,) = [r for r in markdown.splitlines() if r.startswith("| `tests/t.py")]
    assert f"| same (not gated: {WORDS}) |" in row and "has no interval" in row
    data = json.loads(json.dumps(comparison.to_dict()))
    assert data["not_judged"] == {WORDS: 1}
    (saved,) = data["cases"]
    assert saved["not_judged"] == {WORDS: NO_INTERVAL}
    assert saved["shown_verdict"] == f"same (not gated: {WORDS})"


def test_weights_on_one_side_only_or_without_a_weight_say_which() -> None:
    (case,) = compare(measured(2.0, 0.1, recorded=False), measured(2.0, 0.1)).verdicts
    assert case.extra_unjudged == {WORDS: "no critical-path weights in the baseline"}
    (case,) = compare(measured(2.0, 0.1), measured(None, None)).verdicts
    assert case.extra_unjudged == {
        WORDS: "this run's weight for 'default' has no weight "
        "(too few runs: 9 of 16 in 4.0 s; raise budget_s)"
    }
    full = {"runs": 16, "elapsed_s": 0.84, "targets": [{"upstream": "a", "weight": 1.0}]}
    assert weights_not_compared({"critical_path": full}, {"critical_path": full}) == (
        "the baseline's weight for 'a' has no interval (16 runs in 0.8 s); "
        "this run's weight for 'a' has no interval (16 runs in 0.8 s)"
    )
    broken = {"critical_path": {"targets": "?"}}
    assert weights_not_compared(broken, broken) == (
        "the baseline's critical-path record is unreadable; "
        "this run's critical-path record is unreadable"
    )


def test_equal_weights_with_intervals_are_a_plain_same() -> None:
    comparison = compare(measured(2.0, 0.1), measured(2.05, 0.1))
    (case,) = comparison.verdicts
    assert case.shown_verdict == "same" and not case.extra_unjudged
    assert comparison.not_judged_counts() == {}
    assert summary_line(comparison) == "fanout gate passed: 1 same"
    assert WORDS not in everything_said(comparison)


def test_a_case_without_critical_path_is_not_concerned() -> None:
    comparison = compare(measured(None, None, recorded=False), measured(None, None, recorded=False))
    (case,) = comparison.verdicts
    assert case.shown_verdict == "same" and not case.extra_unjudged
    assert summary_line(comparison) == "fanout gate passed: 1 same"
    assert WORDS not in everything_said(comparison)
    assert weights_not_compared({}, {}) == "" and weights_not_compared({}, {"x": 1}) == ""


def test_weights_the_gate_compared_still_decide_a_regression() -> None:
    comparison = compare(measured(2.0, 0.1), measured(3.0, 0.1))
    (case,) = comparison.verdicts
    assert case.shown_verdict == "regression" and not case.extra_unjudged
    assert case.note.startswith("weights: default: weight 2.00 -> 3.00")
    assert WORDS not in everything_said(comparison)
