"""The gate and the timeline: a change of the critical path's structure (recorded weights)
is a regression against a baseline from any machine, and the Markdown report shows the
regressed case's waterfall, base and head. Made-up records: no server, no clock."""

from __future__ import annotations

from pytest_fanout.gate import (
    GateConfig,
    Run,
    compare_runs,
    regression_lines,
    render_comparison_markdown,
)
from pytest_fanout.measurement import Measurement
from pytest_fanout.timeline.calls import Call, RequestTimeline
from pytest_fanout.timeline.waterfall import Waterfall

SAMPLES = [0.100, 0.101, 0.099, 0.100, 0.102, 0.100, 0.098, 0.101, 0.100, 0.099]


def _timeline(rounds: int) -> dict:
    calls = [
        Call("pricing", "POST", "/quote", "/quote", i * 0.03, (i + 1) * 0.03, 30.0, 200, str(i))
        for i in range(rounds)
    ]
    return Waterfall(RequestTimeline("POST", "/checkout", rounds * 0.03, calls)).to_dict()


def _measurement(pricing_weight: float, with_weights: bool = True) -> Measurement:
    m = Measurement(path="/checkout", method="POST", samples=list(SAMPLES), test="t::checkout")
    if with_weights:
        targets = [
            {"upstream": "auth", "route": "", "weight": 1.0, "half_width": 0.08},
            {"upstream": "pricing", "route": "", "weight": pricing_weight, "half_width": 0.1},
        ]
        m.critical_path = {"targets": targets}
        m.timeline = _timeline(round(pricing_weight))
    return m


def _compare(base: Measurement, now: Measurement, base_machine: str = "ci-a"):
    # Two different machines: raw times would not be comparable, weights are.
    base_run = Run.from_measurements([base], {"cpu_count": 2, "machine": base_machine})
    now_run = Run.from_measurements([now], {"cpu_count": 16, "machine": "laptop"})
    return compare_runs(base_run, now_run, GateConfig.from_options("efficiency-15%")), now_run


def test_a_second_sequential_round_is_a_regression_from_another_machine() -> None:
    comparison, now_run = _compare(_measurement(1.0), _measurement(2.02))
    (case,) = comparison.verdicts
    assert case.verdict == "regression" and comparison.failed
    assert case.note.startswith("weights: pricing: weight 1.00 -> 2.02 (paid more often")
    (line,) = regression_lines(comparison)
    assert line.startswith("REGRESSION ") and "pricing: weight 1.00 -> 2.02" in line
    markdown = render_comparison_markdown(comparison, now_run)
    assert markdown.count("```mermaid") >= 2  # base and head waterfalls (and maybe the chart)
    assert "**baseline**" in markdown and "**now**" in markdown
    assert "POST /quote x2" in markdown  # the head's second round


def test_fewer_rounds_is_an_improvement_and_equal_weights_say_nothing() -> None:
    comparison, _ = _compare(_measurement(2.0), _measurement(1.0))
    assert comparison.verdicts[0].verdict == "improvement" and not comparison.failed
    comparison, _ = _compare(_measurement(1.0), _measurement(1.1))
    assert "weights" not in comparison.verdicts[0].note


def test_without_weights_on_one_side_structure_is_not_judged() -> None:
    comparison, _ = _compare(_measurement(1.0, with_weights=False), _measurement(3.0))
    (case,) = comparison.verdicts
    assert "weights" not in case.note and case.verdict != "regression"
