"""The gate on Locust results: made-up LoadResult dicts, no Locust run, no clock, no timing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pytest_fanout.gate import (
    DEFAULT_FAIL_ON,
    GateConfig,
    GateError,
    Run,
    compare_runs,
    parse_fail_on,
    regression_lines,
    render_comparison_markdown,
    render_comparison_text,
    render_run_markdown,
)
from pytest_fanout.gate.runs import KIND_LOCUST
from pytest_fanout.gate.stats import histogram_sample
from pytest_fanout.load import EndpointResult, LoadResult, percentile_from_histogram
from pytest_fanout.measurement import Measurement

TEST = "tests/test_load.py::test_load"
ASYNC = f"{TEST} GET /async/5"
TOTAL = f"{TEST} Aggregated"


def histogram(center_ms: float, spread_ms: float, k: int, seed: int = 0) -> dict[int, int]:
    """k made-up response times around center_ms, in Locust's buckets (10 ms above 100 ms)."""
    rng = random.Random(seed)
    out: dict[int, int] = {}
    for _ in range(k):
        ms = max(1, round(rng.gauss(center_ms, spread_ms)))
        bucket = ms if ms < 100 else round(ms, -1)
        out[bucket] = out.get(bucket, 0) + 1
    return out


def row(name: str, times: dict[int, int], failures: int = 0, rps: float = 50.0) -> dict:
    """One endpoint's `EndpointResult.to_dict()`, percentiles by Locust's own rule."""
    requests = sum(times.values())
    return {
        "method": "GET" if name != "Aggregated" else "",
        "name": name,
        "requests": requests,
        "failures": failures,
        "fail_ratio": failures / requests if requests else 0.0,
        "rps": rps,
        **{
            f"p{q}_ms": percentile_from_histogram(
                {float(k): v for k, v in times.items()}, requests, q / 100
            )
            for q in (50, 95, 99)
        },
        "avg_ms": sum(k * v for k, v in times.items()) / requests if requests else 0.0,
        "min_ms": min(times, default=0),
        "max_ms": max(times, default=0),
        "histogram": {str(k): v for k, v in sorted(times.items())},
    }


def load_result(times: dict[int, int], failures: int = 0, rps: float = 50.0, **kw) -> LoadResult:
    """A made-up `LoadResult.to_dict()` with one endpoint (and its total), read back."""
    endpoint = row("/async/5", times, failures, rps)
    data = {
        "kind": "locust",
        "schema": 1,
        "name": TEST,
        "host": "http://127.0.0.1:1",
        "users": kw.get("users", 4),
        "spawn_rate": 4.0,
        "run_time_s": 30,
        "user_classes": ["AsyncUser"],
        "options": {"fanout_n": 5},
        "exit_code": 0,
        "violations": [],
        "duration_s": 30.0,
        "endpoints": {"GET /async/5": endpoint},
        "total": {**endpoint, "method": "", "name": "Aggregated"},
    }
    return LoadResult.from_dict(json.loads(json.dumps(data)))


#: One machine's fingerprint: latency is compared only between runs that carry the same one.
FP = {
    "cpu_model": "test CPU",
    "cores": 2,
    "python": "CPython 3.11.7",
    "os": "Linux 6",
    "package": "0",
}


def run_of(*results: LoadResult) -> Run:
    return Run.from_session([], results, {"cpu_count": 2, "fingerprint": FP})


def compare(base: LoadResult, now: LoadResult, fail_on: str | None = None):
    return compare_runs(run_of(base), run_of(now), GateConfig.from_options(fail_on))


def verdicts(comparison) -> dict[str, str]:
    return {v.id: v.verdict for v in comparison.verdicts}


def test_one_case_per_endpoint_and_one_for_the_total() -> None:
    run = run_of(load_result(histogram(120, 15, 500)))
    assert [(c.id, c.kind) for c in run.cases] == [(ASYNC, KIND_LOCUST), (TOTAL, KIND_LOCUST)]
    record = run.cases[0].record
    assert record["test"] == TEST and record["endpoint"] == "GET /async/5"
    assert record["users"] == 4 and record["options"] == {"fanout_n": 5}
    assert sum(record["stats"]["histogram"].values()) == 500


def test_equal_results_are_the_same_and_pass() -> None:
    result = load_result(histogram(120, 15, 1500))
    comparison = compare(result, result)
    assert verdicts(comparison) == {ASYNC: "same", TOTAL: "same"}
    assert not comparison.failed and regression_lines(comparison) == []
    [async_case, _] = comparison.verdicts
    # Every Locust metric is compared: the three default rules, then rps, reported only.
    assert [(c.rule.metric.name, c.rule.enforced) for c in async_case.changes] == [
        ("load-p95", True),
        ("fail-ratio", True),
        ("completed", True),
        ("rps", False),
    ]
    assert async_case.changes[0].change == 0


def test_a_clear_p95_rise_with_many_samples_is_slower() -> None:
    base = load_result(histogram(120, 15, 1500, seed=1))
    now = load_result(histogram(180, 15, 1500, seed=2))
    comparison = compare(base, now)
    assert verdicts(comparison) == {ASYNC: "regression", TOTAL: "regression"}
    assert comparison.failed
    line = regression_lines(comparison)[0]
    assert line.startswith(f"REGRESSION {ASYNC}: load-p95 ")
    assert "limit load-p95+25%" in line and "p=" in line
    change = comparison.verdicts[0].changes[0]
    assert change.p_worse is not None and change.p_worse < 1e-6
    assert change.interval is not None and change.interval[0] > 0.25


def test_a_small_p95_rise_is_the_same_even_when_significant() -> None:
    base = load_result(histogram(120, 15, 1500, seed=1))
    now = load_result(histogram(128, 15, 1500, seed=2))
    comparison = compare(base, now)
    assert verdicts(comparison) == {ASYNC: "same", TOTAL: "same"}
    [change, *_] = comparison.verdicts[0].changes
    assert change.p_worse is not None and change.p_worse < 0.01  # beyond the noise ...
    assert change.change is not None and change.change < 0.25  # ... but under the limit


def test_a_big_rise_on_too_few_requests_is_not_judged() -> None:
    comparison = compare(load_result({120: 2}), load_result({300: 2}))
    assert verdicts(comparison)[ASYNC] == "same"
    assert "too few samples" in comparison.verdicts[0].changes[0].note


def test_faster_is_reported_never_failed() -> None:
    base = load_result(histogram(180, 15, 1500, seed=1))
    now = load_result(histogram(120, 15, 1500, seed=2), rps=80.0)
    comparison = compare(base, now)
    assert verdicts(comparison) == {ASYNC: "improvement", TOTAL: "improvement"}
    assert not comparison.failed


def test_rps_is_reported_only_unless_a_rule_names_it() -> None:
    times = histogram(120, 15, 1500)
    base, now = load_result(times, rps=50.0), load_result(times, rps=25.0)

    reported = compare(base, now)
    assert verdicts(reported)[ASYNC] == "same" and not reported.failed
    note = reported.verdicts[0].note
    assert "rps 50/s -> 25/s (-50.0%, worse beyond rps-20%, reported only" in note

    named = compare(base, now, "rps-20%")
    assert verdicts(named)[ASYNC] == "regression" and named.failed
    [line, _] = regression_lines(named)
    assert line == (f"REGRESSION {ASYNC}: rps 50/s -> 25/s (-50.0%, limit rps-20%, no noise test)")
    assert "rps by the limit alone" in named.config.describe()
    json.dumps(named.to_dict(), allow_nan=False)


def test_new_failures_beyond_the_noise_fail_by_default() -> None:
    times = histogram(120, 15, 1000)
    comparison = compare(load_result(times), load_result(times, failures=50))
    assert verdicts(comparison)[ASYNC] == "regression"
    [line, _] = regression_lines(comparison)
    assert line.startswith(f"REGRESSION {ASYNC}: fail-ratio 0 -> 0.05 (+0.050")
    # One failure in a thousand is under fail-ratio+0.01: not a regression.
    assert verdicts(compare(load_result(times), load_result(times, failures=1)))[ASYNC] == "same"


def test_a_record_without_histogram_still_reads_and_is_reported_only() -> None:
    old = load_result(histogram(120, 15, 500)).to_dict()
    for r in [*old["endpoints"].values(), old["total"]]:
        del r["histogram"]
    without = LoadResult.from_dict(old)
    assert without.total.histogram == {} and "histogram" not in without.to_dict()["total"]
    now = load_result(histogram(300, 15, 500))
    comparison = compare(without, now)
    assert verdicts(comparison)[ASYNC] == "same"
    assert "no histogram saved" in comparison.verdicts[0].changes[0].note


def test_cases_on_one_side_only_are_reported() -> None:
    base = load_result(histogram(120, 15, 200))
    other = LoadResult.from_dict({**base.to_dict(), "name": "tests/test_load.py::test_other"})
    comparison = compare_runs(run_of(base), run_of(other), GateConfig.from_options(None))
    assert sorted(v.verdict for v in comparison.verdicts) == ["not gated"] * 4
    assert (
        sorted(v.reason for v in comparison.verdicts)
        == ["in the baseline, not measured in this run"] * 2 + ["new case: not in the baseline"] * 2
    )
    assert comparison.failed and comparison.exit_status == 6  # nothing was compared


def test_changed_load_settings_are_noted() -> None:
    times = histogram(120, 15, 500)
    comparison = compare(load_result(times, users=4), load_result(times, users=10))
    assert "users changed 4 -> 10" in comparison.verdicts[0].note


def test_saved_and_loaded_with_measurements(tmp_path: Path) -> None:
    m = Measurement(
        path="/async/5", samples=[0.11] * 5, n=5, concurrency=5, upstream_delay_s=0.1, test=TEST
    )
    result = load_result(histogram(120, 15, 300))
    run = Run.from_session([m], [result], {"cpu_count": 2})
    path = run.save(tmp_path / "run.json")
    again = Run.load(path)
    assert [c.kind for c in again.cases] == ["measurement", KIND_LOCUST, KIND_LOCUST]
    assert again.cases[1].load_row() == EndpointResult.from_dict(
        result.endpoints["GET /async/5"].to_dict()
    )
    comparison = compare_runs(again, again, GateConfig.from_options(DEFAULT_FAIL_ON))
    assert {v.verdict for v in comparison.verdicts} == {"same"}
    assert "load-p95" in render_comparison_text(comparison)
    assert ":white_check_mark:" in render_comparison_markdown(comparison)
    markdown = render_run_markdown(again)
    assert f"| {ASYNC} | 300 |" in markdown


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        (None, "locust record: stats: Input should be a valid dictionary"),
        ({"requests": -1, "failures": 0, "rps": 1.0, "p95_ms": 1}, "stats.requests: Input"),
        ({"requests": 1, "failures": 0, "rps": "fast", "p95_ms": 1}, "stats.rps: Input should be"),
        (
            {"requests": 1, "failures": 0, "rps": 1.0, "p95_ms": 1, "histogram": {"x": 1}},
            "histogram bucket 'x' is not a number of ms",
        ),
    ],
)
def test_a_bad_locust_record_is_one_line(tmp_path: Path, stats, message: str) -> None:
    run = run_of(load_result(histogram(120, 15, 50)))
    data = run.to_dict()
    data["cases"][0]["record"]["stats"] = stats
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GateError) as info:
        Run.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert f"({ASYNC})" in str(info.value)


def test_histogram_sample_is_capped_deterministic_and_keeps_the_shape() -> None:
    hist = {100.0: 9000, 200.0: 1000}
    values = histogram_sample(hist)
    assert len(values) == 2000 and values == histogram_sample(dict(reversed(hist.items())))
    assert values.count(200.0) == 200 and values == sorted(values)
    assert histogram_sample({5.0: 2, 1.0: 1}) == [1.0, 5.0, 5.0]
    assert histogram_sample({}) == []


def test_histogram_round_trips_with_string_keys_in_order() -> None:
    row_ = EndpointResult("GET", "/a", 3, 0, 1.0, 110, 130, 130, histogram={"130": 1, "110": 2})
    data = row_.to_dict()
    assert data["histogram"] == {"110": 2, "130": 1} and list(data["histogram"]) == ["110", "130"]
    assert EndpointResult.from_dict(data) == row_
    assert "histogram" not in EndpointResult("GET", "/a", 0, 0, 0.0, 0, 0, 0).to_dict()


@pytest.mark.parametrize(
    ("text", "rules"),
    [
        ("load-p95+25%", [("load-p95", 0.25, True)]),
        ("load-p95+40ms,rps-20%", [("load-p95", 0.04, False), ("rps", 0.2, True)]),
        ("fail-ratio+0.01, rps-5", [("fail-ratio", 0.01, False), ("rps", 5.0, False)]),
    ],
)
def test_locust_rules_read_as_written(text: str, rules: list) -> None:
    assert [(r.metric.name, pytest.approx(r.limit), r.percent) for r in parse_fail_on(text)] == [
        (name, pytest.approx(limit), percent) for name, limit, percent in rules
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rps+20%", "rps is worse when it drops, write rps-20%"),
        ("load-p95-25%", "load-p95 is worse when it rises, write load-p95+25%"),
        ("rps-10ms", "rps is a rate (requests/s)"),
        ("fail-ratio+1ms", "fail-ratio is a ratio"),
        ("load-p95+25", "give load-p95 a unit"),
        ("fail_ratio+0.01", "unknown metric 'fail_ratio'"),
    ],
)
def test_bad_locust_rules_are_one_line(text: str, message: str) -> None:
    with pytest.raises(GateError) as info:
        parse_fail_on(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_locust_rules_leave_measurement_cases_alone() -> None:
    m = Measurement(
        path="/async/5", samples=[0.11] * 5, n=5, concurrency=5, upstream_delay_s=0.1, test=TEST
    )
    base = Run.from_session([m], [], {"cpu_count": 2})
    now = Run.from_session([m], [], {"cpu_count": 16})
    comparison = compare_runs(base, now, GateConfig.from_options(DEFAULT_FAIL_ON))
    [case] = comparison.verdicts
    assert [c.rule.metric.name for c in case.changes] == ["efficiency"]
    assert any(
        n.startswith("latency rules (median+10%, p95+25%) not gated") for n in comparison.notes
    )


@pytest.mark.parametrize("fail_on", [None, "load-p95+25%", "none"])
def test_a_row_whose_requests_fell_to_none_is_slower(fail_on: str | None) -> None:
    """21 requests -> 0 (the upstream slowed from 100 to 3000 ms): zero is not a pass."""
    comparison = compare(load_result(histogram(120, 15, 21)), load_result({}), fail_on)
    assert verdicts(comparison) == {ASYNC: "regression", TOTAL: "regression"}
    assert comparison.failed is (fail_on != "none")
    change = next(c for c in comparison.verdicts[0].changes if c.regressed)
    assert change.rule.metric.name == "completed"
    assert change.note == "no request completed (baseline 21): a regression whatever the rules"


def test_completed_requests_halving_is_slower_by_the_default_limit() -> None:
    base = load_result(histogram(120, 15, 400))
    comparison = compare(base, load_result(histogram(120, 15, 150, seed=1)))
    assert verdicts(comparison)[ASYNC] == "regression"
    [line, _] = regression_lines(comparison)
    assert line.startswith(f"REGRESSION {ASYNC}: completed 400 -> 150 (-62.5%, limit completed-50%")
    # Within the limit (-25%): reported, not failed.
    comparison = compare(base, load_result(histogram(120, 15, 300, seed=1)))
    assert verdicts(comparison)[ASYNC] == "same"
