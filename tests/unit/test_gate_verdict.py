"""The gate's verdicts and rules on made-up samples: no server, no clock, no timing."""

from __future__ import annotations

import random

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
)
from pytest_fanout.gate.rules import parse_alpha
from pytest_fanout.measurement import Measurement

TEST = "tests/test_perf.py::test_gather"
DELAY = 0.100  # upstream delay: ideal of /async/20 is 100 ms


def samples(median_s: float, spread_s: float, k: int = 10, seed: int = 0) -> list[float]:
    """k made-up timings around median_s (uniform noise of +-spread_s)."""
    rng = random.Random(seed)
    return [median_s + rng.uniform(-spread_s, spread_s) for _ in range(k)]


def measurement(values: list[float], path: str = "/async/20", test: str = TEST) -> Measurement:
    n = int(path.rstrip("/").split("/")[2])
    concurrency = 1 if path.startswith("/sync") else n
    return Measurement(
        path=path, samples=values, n=n, concurrency=concurrency, upstream_delay_s=DELAY, test=test
    )


#: One machine's fingerprint: latency is compared only between runs that carry the same one.
FP = {
    "cpu_model": "test CPU",
    "cores": 2,
    "python": "CPython 3.11.7",
    "os": "Linux 6",
    "package": "0",
}


def run_of(*ms: Measurement) -> Run:
    return Run.from_measurements(ms, {"cpu_count": 2, "python": "3.11.7", "fingerprint": FP})


def verdict(base: list[float], now: list[float], fail_on: str = DEFAULT_FAIL_ON) -> str:
    comparison = compare_runs(
        run_of(measurement(base)), run_of(measurement(now)), GateConfig.from_options(fail_on)
    )
    [case] = comparison.verdicts
    return case.verdict


# ---- the three the issue asks for ---------------------------------------------------


def test_equal_distributions_are_same() -> None:
    assert verdict(samples(0.110, 0.004, seed=1), samples(0.110, 0.004, seed=2)) == "same"


def test_identical_samples_are_same() -> None:
    values = samples(0.110, 0.004)
    assert verdict(values, list(values)) == "same"


def test_a_clear_shift_beyond_the_threshold_is_slower() -> None:
    # 110 ms -> 150 ms: efficiency 0.91 -> 0.67 (-27%), overhead +2 ms per call.
    base, now = samples(0.110, 0.004, seed=1), samples(0.150, 0.004, seed=2)
    assert verdict(base, now) == "regression"
    assert verdict(base, now, "efficiency-10%") == "regression"
    assert verdict(base, now, "overhead+1ms") == "regression"


def test_a_shift_within_the_noise_is_same() -> None:
    # The medians move 16% but the samples overlap: noise, not a regression.
    base = [0.100, 0.104, 0.180, 0.110, 0.175, 0.102, 0.170, 0.108, 0.165, 0.106]
    now = [0.101, 0.185, 0.109, 0.178, 0.105, 0.172, 0.111, 0.168, 0.160, 0.176]
    comparison = compare_runs(
        run_of(measurement(base)),
        run_of(measurement(now)),
        GateConfig.from_options("efficiency-10%"),
    )
    [case] = comparison.verdicts
    assert case.verdict == "same"
    assert case.changes[0].change < -0.10  # beyond the threshold ...
    assert case.changes[0].p_worse >= 0.01  # ... but not beyond the noise
    assert "within the noise" in case.changes[0].note
    assert not comparison.failed


def test_a_real_but_small_shift_below_the_threshold_is_same() -> None:
    # Every sample 3% slower: significant, yet below efficiency-10%: not worth failing a PR.
    base = samples(0.110, 0.001, seed=1)
    now = [s * 1.03 for s in base]
    comparison = compare_runs(
        run_of(measurement(base)),
        run_of(measurement(now)),
        GateConfig.from_options("efficiency-10%"),
    )
    [case] = comparison.verdicts
    assert case.changes[0].p_worse < 0.01
    assert case.verdict == "same"


def test_faster_is_reported_and_never_fails() -> None:
    base, now = samples(0.150, 0.004, seed=1), samples(0.110, 0.004, seed=2)
    comparison = compare_runs(
        run_of(measurement(base)),
        run_of(measurement(now)),
        GateConfig.from_options(DEFAULT_FAIL_ON),
    )
    assert [v.verdict for v in comparison.verdicts] == ["improvement"]
    assert not comparison.failed
    assert regression_lines(comparison) == []


def test_false_alarms_stay_below_alpha_on_many_made_up_a_a_pairs() -> None:
    # Pure noise, 300 pairs, a threshold of 0: only the rank test stands between
    # noise and a false alarm, and it may fire about alpha of the time.
    alarms = 0
    for seed in range(300):
        base, now = samples(0.110, 0.01, seed=2 * seed), samples(0.110, 0.01, seed=2 * seed + 1)
        alarms += verdict(base, now, "efficiency-0%") == "regression"
    assert alarms <= 9  # alpha = 0.01 -> ~3 expected; 9 would be a 1-in-1000 excess


# ---- the rest of the verdicts ----------------------------------------------------------


def test_cases_on_one_side_only_are_new_and_missing_never_a_crash() -> None:
    kept = measurement(samples(0.110, 0.004), "/async/20")
    gone = measurement(samples(0.110, 0.004), "/async/50")
    added = measurement(samples(0.110, 0.004), "/async/30")
    comparison = compare_runs(
        run_of(kept, gone), run_of(kept, added), GateConfig.from_options(DEFAULT_FAIL_ON)
    )
    by_id = {v.id: v.verdict for v in comparison.verdicts}
    assert by_id == {
        f"{TEST} /async/20": "same",
        f"{TEST} /async/30": "not gated",
        f"{TEST} /async/50": "not gated",
    }
    reasons = {v.id: v.reason for v in comparison.verdicts}
    assert reasons[f"{TEST} /async/30"] == "new case: not in the baseline"
    assert reasons[f"{TEST} /async/50"] == "in the baseline, not measured in this run"
    assert not comparison.failed  # one case was gated
    assert comparison.counts() == {"regression": 0, "improvement": 0, "same": 1, "not gated": 2}


def test_a_regression_fails_only_when_rules_fail() -> None:
    base, now = (
        run_of(measurement(samples(0.110, 0.004))),
        run_of(measurement(samples(0.160, 0.004, seed=3))),
    )
    failing = compare_runs(base, now, GateConfig.from_options(DEFAULT_FAIL_ON))
    report_only = compare_runs(base, now, GateConfig.from_options("none"))
    assert failing.failed
    assert report_only.regressions and not report_only.failed


def test_one_regression_line_per_regressed_case() -> None:
    base = run_of(
        measurement(samples(0.110, 0.004)), measurement(samples(0.110, 0.004), "/async/50")
    )
    now = run_of(
        measurement(samples(0.160, 0.004)), measurement(samples(0.210, 0.004), "/async/50")
    )
    comparison = compare_runs(base, now, GateConfig.from_options(DEFAULT_FAIL_ON))
    lines = regression_lines(comparison)
    assert len(lines) == 2
    assert lines[0].startswith(f"REGRESSION {TEST} /async/20: median 110 ms -> 160 ms")
    assert "limit median+10%" in lines[0]
    text = render_comparison_text(comparison)
    assert "regression" in text and "fanout gate FAILED: 2 regression" in text
    markdown = render_comparison_markdown(comparison)
    assert markdown.startswith("### :x: pytest-fanout regression gate")
    assert "| case | metric | base | head | change | p | catches | verdict | why |" in markdown


def test_too_few_samples_never_call_a_regression_and_are_not_gated() -> None:
    assert verdict([0.110, 0.111], [0.300, 0.310]) == "not gated"


def test_raw_seconds_only_on_request() -> None:
    base, now = samples(0.110, 0.004, seed=1), samples(0.150, 0.004, seed=2)
    assert verdict(base, now, "p95+20%") == "regression"
    assert verdict(base, now, "median+50ms") == "same"  # +40 ms is within 50 ms
    assert verdict(base, now, "median+30ms") == "regression"


def test_speedup_is_measured_in_the_same_run() -> None:
    def suite(sync_s: float, async_s: float, seed: int) -> Run:
        return run_of(
            measurement(samples(sync_s, 0.01, seed=seed), "/sync/20"),
            measurement(samples(async_s, 0.004, seed=seed + 1), "/async/20"),
        )

    # A machine twice as slow everywhere: raw seconds double, the speedup does not move.
    comparison = compare_runs(
        suite(2.1, 0.110, 1), suite(4.2, 0.220, 3), GateConfig.from_options("speedup-20%")
    )
    verdicts = {v.id.split()[-1]: v for v in comparison.verdicts}
    assert verdicts["/async/20"].verdict == "same"
    assert verdicts["/sync/20"].note.startswith("no speedup")  # the reference itself
    # The async path alone got slower: the speedup drops, the gate says so.
    comparison = compare_runs(
        suite(2.1, 0.110, 1), suite(2.1, 0.200, 3), GateConfig.from_options("speedup-20%")
    )
    assert {v.id.split()[-1]: v.verdict for v in comparison.verdicts}["/async/20"] == "regression"


def test_a_path_without_an_ideal_is_reported_not_crashed_on() -> None:
    custom = Measurement(path="/my/route", samples=samples(0.1, 0.004), test=TEST)
    comparison = compare_runs(
        run_of(custom), run_of(custom), GateConfig.from_options("efficiency-10%")
    )
    [case] = comparison.verdicts
    assert case.verdict == "not gated" and case.reason == "no comparable metric"
    assert "no efficiency" in case.note
    # The default rules gate its latency (same machine) even without n.
    default = compare_runs(run_of(custom), run_of(custom), GateConfig.from_options(None))
    assert [v.verdict for v in default.verdicts] == ["same"]


def test_another_kind_of_record_is_skipped() -> None:
    run = run_of(measurement(samples(0.110, 0.004)))
    load = Run.from_dict(
        {
            **run.to_dict(),
            "cases": [
                {
                    "id": "tests/test_load.py::test_load /async/20",
                    "kind": "load",
                    "record": {"rps": 50},
                },
            ],
        }
    )
    comparison = compare_runs(load, load, GateConfig.from_options(DEFAULT_FAIL_ON))
    assert [v.verdict for v in comparison.verdicts] == ["not gated"]
    assert comparison.verdicts[0].reason == "the gate does not compare load yet"


def test_a_changed_machine_skips_latency_with_a_line_and_gates_the_portable_metrics() -> None:
    other = {**FP, "cores": 16}
    base = Run.from_measurements([measurement(samples(0.110, 0.004))], {"fingerprint": FP})
    # 2x slower: on another machine that is not evidence; the efficiency is the same.
    now = Run.from_measurements(
        [measurement(samples(0.220, 0.004, seed=4))], {"fingerprint": other}
    )
    comparison = compare_runs(base, now, GateConfig.from_options("median+10%,efficiency-15%"))
    [line] = [n for n in comparison.notes if n.startswith("latency rules")]
    assert line == (
        "latency rules (median+10%) not gated: the machine differs: cores 2 -> 16; "
        "only portable metrics are compared"
    )
    [case] = comparison.verdicts
    assert case.verdict == "regression"  # by efficiency, the portable metric
    assert [c.label for c in case.changes] == ["efficiency"]


def test_an_old_baseline_without_fingerprint_skips_latency_with_a_line() -> None:
    base = Run.from_measurements([Measurement(path="/x", samples=samples(0.1, 0.004), test=TEST)])
    now = run_of(Measurement(path="/x", samples=samples(0.3, 0.004), test=TEST))
    comparison = compare_runs(base, now, GateConfig.from_options(None))
    assert any(
        "not gated: the baseline records no machine fingerprint (saved by an older" in n
        for n in comparison.notes
    )
    [case] = comparison.verdicts
    assert case.verdict == "not gated"
    assert case.reason.startswith("machine differs")
    assert comparison.nothing_gated and comparison.failed
    assert comparison.exit_status == 6
    assert "no case was gated: 1 machine differs" in render_comparison_text(comparison)
    accepted = compare_runs(base, now, GateConfig.from_options(None, allow_ungated=True))
    assert not accepted.failed and accepted.exit_status == 0


# ---- the rule syntax -----------------------------------------------------------------


def test_rules_read_as_written() -> None:
    rules = parse_fail_on("efficiency-10%, overhead+0.5ms, p95+20%, median+2s, speedup-0.5abs")
    assert [(r.metric.name, r.limit, r.percent) for r in rules] == [
        ("efficiency", pytest.approx(0.10), True),
        ("overhead", pytest.approx(0.0005), False),
        ("p95", pytest.approx(0.20), True),
        ("median", 2.0, False),
        ("speedup", 0.5, False),
    ]
    assert parse_fail_on("none") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("efficiency+10%", "efficiency is worse when it drops, write efficiency-10%"),
        ("p95-10%", "p95 is worse when it rises, write p95+10%"),
        ("latency+10%", "unknown metric 'latency'"),
        ("efficiency>10%", "cannot read fail-on rule"),
        ("overhead+1", "give overhead a unit"),
        ("efficiency-1ms", "efficiency is a ratio"),
        ("efficiency-15", "write efficiency-15% for a relative change, or efficiency-0.15abs"),
        ("speedup-2", "speedup is a ratio; write speedup-2% for a relative change"),
        ("median+1000001%", "the limit is past"),
        ("efficiency-10%,efficiency-20%", "names efficiency twice"),
        ("", "is empty"),
        (",", "no rule"),
    ],
)
def test_bad_rules_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(GateError) as info:
        parse_fail_on(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["0", "0.5", "1", "x", "-0.1"])
def test_bad_alpha_is_refused(text: str) -> None:
    with pytest.raises(GateError):
        parse_alpha(text)


def test_a_zero_baseline_has_no_relative_change_and_stays_valid_json() -> None:
    import json

    base, now = measurement([0.0] * 5), measurement([0.1] * 5)
    comparison = compare_runs(run_of(base), run_of(now), GateConfig.from_options("median+10%"))
    [case] = comparison.verdicts
    assert case.verdict == "not gated"
    assert "baseline is 0" in case.changes[0].note
    json.dumps(comparison.to_dict(), allow_nan=False)
