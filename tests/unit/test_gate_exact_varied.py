"""The gate's exact counts that are no fact of the code: new connections per request and a
structure that varied between one side's own samples are "not gated", never "same" nor a
regression; a stable count is judged exactly; a REGRESSION line names the exact counts
first. Made-up records only (tests/plugin/test_gate_exact_plugin.py runs real services)."""

from __future__ import annotations

import json

import pytest

from pytest_fanout.gate import GateConfig, Run, compare_runs
from pytest_fanout.gate.report import regression_lines, summary_line
from pytest_fanout.gate.runs import KIND_MEASUREMENT, Case
from pytest_fanout.measure import measure
from pytest_fanout.measurement import Request

TEST = "tests/test_weather.py::test_async"
FP = {"cpu_model": "A", "cores": 2, "python": "CPython 3.11.7", "os": "Linux 6", "package": "0"}


def run(
    connections: list[int] | None = None,
    calls: list[int] | None = None,
    samples: list[float] | None = None,
    structure: dict | None = None,
    structures: list[dict] | None = None,
    warmup: int = 1,
) -> Run:
    samples = samples or [0.10] * 5
    record: dict = {"path": "/w", "samples": samples, "test": TEST, "warmup": warmup}
    if connections is not None:
        calls = calls or [5] * len(connections)
        record["upstream_gauges"] = {"pricing": {"connections": connections, "requests": calls}}
    if structure is not None:
        record["structure"] = structure
    if structures is not None:
        record["structures"] = structures
    return Run([Case(f"{TEST} /w", KIND_MEASUREMENT, record)], {"fingerprint": FP})


def one(base: Run, now: Run):  # noqa: ANN201 - the verdict and the comparison
    comparison = compare_runs(base, now, GateConfig.from_options(None))
    [case] = comparison.verdicts
    return case, comparison


def by_label(case) -> dict:  # noqa: ANN001
    return {c.label: c for c in case.changes}


LABEL = "connections per request[pricing]"


def test_a_client_per_request_against_a_reused_pool_is_a_regression_with_its_evidence() -> None:
    case, comparison = one(run([0] * 5), run([5] * 5))
    assert case.verdict == "regression"
    change = by_label(case)[LABEL]
    assert (change.base, change.now, change.regressed) == (0, 5, True)
    assert change.hint == "a client built per request?"
    [line] = regression_lines(comparison)
    assert f"{LABEL} 0 -> 5 (a client built per request?) (+5, limit connections+0, exact)" in line


def test_the_shared_client_is_same_and_gated_with_no_hint() -> None:
    case, comparison = one(run([0] * 5), run([0] * 5))
    assert case.verdict == "same" and case.shown_verdict == "same"
    change = by_label(case)[LABEL]
    assert change.gated and not change.regressed and not change.hint
    assert "a client built per request" not in json.dumps(comparison.to_dict())


def test_new_connections_below_the_calls_regress_without_the_client_hint() -> None:
    # 2 new connections a request for 5 calls: a smaller pool, not a client per request.
    case, _ = one(run([0] * 5), run([2] * 5))
    change = by_label(case)[LABEL]
    assert change.regressed and change.hint == ""


def test_connections_that_varied_in_the_base_are_not_gated_never_same() -> None:
    # A pool that closes idle connections on a timer: 0 in some samples, 2 in others.
    case, comparison = one(run([0, 2, 0, 1, 0]), run([0] * 5))
    change = by_label(case)[LABEL]
    assert not change.gated and not change.regressed and not change.improved
    assert change.unjudged == "connections varied in the base (0, 2, 0, 1, 0)"
    assert case.shown_verdict == f"same (not gated: {LABEL})"
    assert "not gated: connections per request[pricing] (connections varied in the base" in (
        case.unjudged_note
    )
    assert f"not gated: {LABEL} in 1" in summary_line(comparison)
    # The head's count varying is not judged either (and a regression is not said of it).
    case, _ = one(run([0] * 5), run([0, 3, 0, 0, 3]))
    assert by_label(case)[LABEL].unjudged == "connections varied in the head (0, 3, 0, 0, 3)"
    assert case.verdict == "same" and case.not_judged


def test_a_cold_first_sample_without_warm_up_is_not_a_variation() -> None:
    case, _ = one(run([5, 0, 0, 0, 0], warmup=0), run([5, 5, 5, 5, 5], warmup=0))
    change = by_label(case)[LABEL]
    assert change.gated and change.regressed and (change.base, change.now) == (0, 5)


def test_records_without_connection_counts_are_not_noted_missing() -> None:
    case, _ = one(run(), run())
    assert LABEL not in by_label(case) and "connections" not in case.note


def test_the_regression_line_names_the_exact_count_before_the_median() -> None:
    # The weather service made sequential: 5 rounds where there was 1, and 5x slower.
    base = run(structure={"meteo": [5]}, samples=[0.10, 0.11, 0.10, 0.12, 0.10, 0.11])
    now = run(structure={"meteo": [1] * 5}, samples=[0.50, 0.52, 0.51, 0.50, 0.53, 0.52])
    case, comparison = one(base, now)
    assert case.verdict == "regression"
    assert case.shown is not None and case.shown.label == "structure rounds[meteo]"
    [line] = regression_lines(comparison)
    head = f"REGRESSION {TEST} /w: structure rounds[meteo] 1 -> 5 (+4, limit structure+0, exact)"
    assert line.startswith(head), line
    assert line.index("structure rounds[meteo]") < line.index("; median ")


VARIED = [{"meteo": [3]}, {"meteo": [2, 1]}, {"meteo": [3]}, {"meteo": [3]}, {"meteo": [3]}]


def test_a_structure_that_varied_between_samples_is_not_gated() -> None:
    # A limiter whose state outlives the request: [3] in four probes, [2, 1] in one. The
    # head's one probe of the same code happened to see [2, 1]: no regression, no "same".
    base = run(structure={"meteo": [3]}, structures=VARIED)
    now = run(structure={"meteo": [2, 1]})
    case, comparison = one(base, now)
    rounds = by_label(case)["structure rounds[meteo]"]
    assert not rounds.gated and not rounds.regressed
    assert rounds.unjudged == (
        "the structure varied between samples ([3] x4, [2, 1] x1) in the base"
    )
    calls = by_label(case)["structure calls[meteo]"]
    assert calls.gated and not calls.regressed  # 3 calls in every probe: still exact
    assert case.verdict == "same" and "structure rounds[meteo]" in case.shown_verdict
    assert "not gated: structure rounds[meteo] in 1" in summary_line(comparison)
    assert not comparison.failed


def test_a_structure_the_same_in_every_probe_is_judged() -> None:
    steady = [{"meteo": [3]}] * 3
    case, _ = one(run(structure={"meteo": [3]}, structures=steady), run(structure={"meteo": [3]}))
    rounds = by_label(case)["structure rounds[meteo]"]
    assert rounds.gated and rounds.unjudged == "" and case.shown_verdict == "same"
    case, _ = one(
        run(structure={"meteo": [3]}, structures=steady),
        run(structure={"meteo": [1, 1, 1]}, structures=[{"meteo": [1, 1, 1]}] * 3),
    )
    assert case.verdict == "regression"
    assert "varied" not in json.dumps([c.to_dict() for c in case.changes])


@pytest.mark.parametrize("probes", [0, -1, True, 1.5, 21])
def test_held_probes_out_of_bounds_is_one_line(probes: object) -> None:
    with pytest.raises(ValueError, match="held_probes"):
        measure(None, "http://127.0.0.1:9", Request("/w"), upstreams={"x": 1}, held_probes=probes)
