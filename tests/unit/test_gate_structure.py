"""The portable gate: the structure of waves (rounds and calls per upstream), exact on any
machine, judged against a baseline whose machine fingerprint differs; made-up records only."""

from __future__ import annotations

import json

from pytest_fanout.gate import GateConfig, Run, compare_runs, render_comparison_text
from pytest_fanout.gate.report import render_comparison_markdown
from pytest_fanout.gate.runs import KIND_MEASUREMENT, Case

TEST = "tests/test_shop.py::test_checkout"
HERE = {"cpu_model": "A", "cores": 2, "python": "CPython 3.11.7", "os": "Linux 6", "package": "0"}
THERE = {**HERE, "cpu_model": "B", "cores": 8}


def run(structure: dict | None, samples: list[float], fingerprint: dict) -> Run:
    record: dict = {"path": "/checkout", "method": "POST", "samples": samples, "test": TEST}
    if structure is not None:
        record["structure"] = structure
    return Run([Case(f"{TEST} /checkout", KIND_MEASUREMENT, record)], {"fingerprint": fingerprint})


GATHER = {"pricing": [8], "stock": [1, 1]}
SEQUENTIAL = {"pricing": [1] * 8, "stock": [1, 1]}


def test_a_gather_made_sequential_is_a_regression_against_another_machine() -> None:
    base = run(GATHER, [0.12] * 6, HERE)
    # Much faster machine: the wall time dropped, yet the structure regressed, exactly.
    now = run(SEQUENTIAL, [0.05] * 6, THERE)
    comparison = compare_runs(base, now, GateConfig.from_options(None))
    [case] = comparison.verdicts
    assert case.verdict == "regression"
    by_label = {c.label: c for c in case.changes}
    assert set(by_label) == {
        "structure rounds[pricing]",
        "structure calls[pricing]",
        "structure rounds[stock]",
        "structure calls[stock]",
    }
    rounds = by_label["structure rounds[pricing]"]
    assert (rounds.base, rounds.now, rounds.regressed) == (1, 8, True)
    assert not by_label["structure calls[pricing]"].regressed  # still 8 calls
    assert rounds.catches() == "exact: catches any rise"
    assert any(
        n.startswith("latency rules (median+10%, p95+25%) not gated") for n in comparison.notes
    )
    text = render_comparison_text(comparison)
    assert "REGRESSION" not in text  # the table; the lines are apart
    row = next(line.split() for line in text.splitlines() if "rounds[pricing]" in line)
    evidence = row[row.index("rounds[pricing]") :]
    assert evidence == [
        "rounds[pricing]",
        "1",
        "8",
        "+7",
        "-",
        "exact:",
        "catches",
        "any",
        "rise",
        "regression",
    ]
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    metric = next(m for m in data["cases"][0]["metrics"] if m["part"] == "rounds[pricing]")
    assert metric["exact"] is True and metric["catches"] == "exact: catches any rise"
    assert "| **regression** :x: | structure rounds[pricing] worse beyond structure+0" in (
        render_comparison_markdown(comparison, now)
    )


def test_the_same_structure_on_another_machine_is_same_and_gated() -> None:
    comparison = compare_runs(
        run(GATHER, [0.12] * 6, HERE), run(GATHER, [0.30] * 6, THERE), GateConfig.from_options(None)
    )
    [case] = comparison.verdicts
    assert case.verdict == "same" and not comparison.failed


def test_fewer_rounds_is_an_improvement_and_old_records_have_no_structure() -> None:
    better = compare_runs(
        run(SEQUENTIAL, [0.12] * 6, HERE),
        run(GATHER, [0.12] * 6, THERE),
        GateConfig.from_options(None),
    )
    assert [v.verdict for v in better.verdicts] == ["improvement"]
    old = compare_runs(
        run(None, [0.12] * 6, HERE), run(GATHER, [0.12] * 6, THERE), GateConfig.from_options(None)
    )
    [case] = old.verdicts
    assert case.verdict == "not gated" and old.exit_status == 6
    assert "no structure" in case.note


def test_a_structure_of_the_wrong_shape_is_refused_in_one_line(tmp_path) -> None:
    from pytest_fanout.gate import GateError

    data = run(GATHER, [0.1], HERE).to_dict()
    data["cases"][0]["record"]["structure"] = {"pricing": [-1]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    try:
        Run.load(path)
    except GateError as exc:
        assert "structure.pricing.0" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("a negative wave size was read")


def test_without_structure_the_stubs_exact_counts_still_catch_doubled_calls() -> None:
    def counted(calls: int, fingerprint: dict) -> Run:
        record = {
            "path": "/checkout",
            "samples": [0.1] * 6,
            "test": TEST,
            "upstream_gauges": {"pricing": {"requests": [calls] * 6, "peak_inflight": [1] * 6}},
        }
        return Run(
            [Case(f"{TEST} /checkout", KIND_MEASUREMENT, record)], {"fingerprint": fingerprint}
        )

    comparison = compare_runs(counted(8, HERE), counted(16, THERE), GateConfig.from_options(None))
    [case] = comparison.verdicts
    assert case.verdict == "regression"
    assert [c.label for c in case.changes] == ["structure calls[pricing]"]
    assert "rounds not compared" in case.note


def late_run(key: str | None, counts: list[int], fingerprint: dict) -> Run:
    result = run(GATHER, [0.12] * 6, fingerprint)
    if key is not None:
        gauges = {"requests": [4] * len(counts), key: counts}
        result.cases[0].record["upstream_gauges"] = {"parts": gauges}
    return result


def test_orphaned_calls_are_gated_exactly_from_any_machine() -> None:
    for key in ("orphaned", "after_disconnect"):
        base, now = late_run(key, [0] * 6, HERE), late_run(key, [3] * 6, THERE)
        [case] = compare_runs(base, now, GateConfig.from_options(None)).verdicts
        assert case.verdict == "regression", key
        [change] = [c for c in case.changes if c.rule.metric.name == key]
        assert (change.base, change.now, change.regressed) == (0, 3, True)
        assert change.catches() == "exact: catches any rise"
        [case] = compare_runs(base, base, GateConfig.from_options(None)).verdicts
        assert case.verdict == "same"


def test_a_case_that_did_not_measure_them_is_not_judged_on_them() -> None:
    base, now = late_run(None, [], HERE), late_run(None, [], HERE)
    [case] = compare_runs(base, now, GateConfig.from_options(None)).verdicts
    names = {c.rule.metric.name for c in case.changes}
    assert not names & {"orphaned", "after_disconnect"}
    assert "orphaned" not in case.note and "after_disconnect" not in case.note


def limited_run(counts: dict[str, list[int]], fingerprint: dict, limits: dict | None) -> Run:
    result = run(GATHER, [0.12] * 6, fingerprint)
    record = result.cases[0].record
    record["upstream_gauges"] = {"quotes": {"requests": [10] * 6, **counts}}
    if limits is not None:
        record["upstream_limits"] = limits
    return result


def test_429s_and_retries_at_a_limited_upstream_are_gated_exactly() -> None:
    """Issue 33: at an upstream with a limit, one more 429 or retry per request is a
    regression on any machine (as orphaned calls are)."""
    limit = {"quotes": {"max_inflight": 0, "rate_limit": "5/s", "per_s": 5.0, "burst": 5}}
    for key in ("rejected", "retries"):
        base = limited_run({key: [0] * 6}, HERE, limit)
        now = limited_run({key: [5] * 6}, THERE, limit)
        [case] = compare_runs(base, now, GateConfig.from_options(None)).verdicts
        assert case.verdict == "regression", key
        [change] = [c for c in case.changes if c.rule.metric.name == key]
        assert (change.base, change.now, change.regressed) == (0, 5, True)
        assert change.catches() == "exact: catches any rise"
        [case] = compare_runs(base, base, GateConfig.from_options(None)).verdicts
        assert case.verdict == "same"


def test_an_upstream_without_a_limit_is_not_gated_on_429s_or_retries() -> None:
    for limits in (None, {"quotes": {"max_inflight": 0}}, {"other": {"rate_limit": "5/s"}}):
        base = limited_run({"rejected": [0] * 6, "retries": [0] * 6}, HERE, limits)
        now = limited_run({"rejected": [5] * 6, "retries": [5] * 6}, HERE, limits)
        [case] = compare_runs(base, now, GateConfig.from_options(None)).verdicts
        names = {c.rule.metric.name for c in case.changes}
        assert not names & {"rejected", "retries"}, limits
