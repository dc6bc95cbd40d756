"""Exact latency (HdrHistogram) and the open model's results: pure logic, no Locust run."""

from __future__ import annotations

import json
import random

from pytest_fanout.load import TOTAL_NAME, EndpointResult, LoadResult, OpenModelResult, Thresholds
from pytest_fanout.load.exact import (
    EXACT_SUFFIX,
    apply_exact,
    decode,
    encode,
    exact_row,
    new_histogram,
    read_exact_file,
    record_ms,
    summary_ms,
)


def row(name: str = "/a", **kw) -> EndpointResult:
    values = dict(
        method="GET",
        name=name,
        requests=1000,
        failures=0,
        rps=100.0,
        p50_ms=100,
        p95_ms=190,
        p99_ms=200,
        histogram={"100": 500, "190": 500},
    )
    values.update(kw)
    return EndpointResult(**values)


def test_percentiles_are_exact_to_three_significant_figures() -> None:
    rng = random.Random(7)
    values = sorted(rng.uniform(1, 2000) for _ in range(10_000))
    histogram = new_histogram()
    for ms in values:
        record_ms(histogram, ms)
    s = summary_ms(histogram)
    assert s["count"] == 10_000
    for q, key in ((0.50, "p50"), (0.95, "p95"), (0.99, "p99")):
        truth = values[int(q * len(values)) - 1]
        assert abs(s[key] - truth) <= truth * 0.002, (key, s[key], truth)
    assert abs(s["max"] - values[-1]) <= values[-1] * 0.001


def test_histograms_merge_like_one_histogram_of_every_value() -> None:
    one, two, both = new_histogram(), new_histogram(), new_histogram()
    for ms in range(1, 501):
        record_ms(one, ms)
        record_ms(both, ms)
    for ms in range(4001, 4501):
        record_ms(two, ms)
        record_ms(both, ms)
    merged = decode(encode(one))
    merged.decode_and_add(encode(two))
    assert summary_ms(merged) == summary_ms(both)
    assert summary_ms(merged)["p95"] > 4000  # the second half dominates the tail


def test_exact_row_replaces_latency_but_keeps_counts() -> None:
    histogram = new_histogram()
    for ms in (101.5, 102.25, 3000.0):
        record_ms(histogram, ms)
    exact = exact_row(row(), histogram)
    assert exact.exact and exact.requests == 1000 and exact.rps == 100.0
    assert abs(exact.max_ms - 3000) < 3 and abs(exact.min_ms - 101.5) < 0.2
    assert sum(exact.histogram.values()) == 3
    assert row().exact is False


def test_apply_exact_reads_the_file_the_locust_side_writes(tmp_path) -> None:
    histogram = new_histogram()
    for ms in range(1, 101):
        record_ms(histogram, ms)
    open_model = OpenModelResult(
        target_rps=20,
        achieved_rps=19.8,
        scheduled=81,
        started=80,
        dropped=1,
        arrivals="poisson",
        grace_ms=1000,
        users=10,
    )
    data = {
        "schema": 1,
        "endpoints": {"GET /a": encode(histogram), TOTAL_NAME: encode(histogram)},
        "open_model": open_model.to_dict(),
    }
    prefix = tmp_path / "locust"
    (tmp_path / f"locust{EXACT_SUFFIX}").write_text(json.dumps(data))
    endpoints, total, read = apply_exact(
        {"GET /a": row(), "GET /b": row("/b")}, row(TOTAL_NAME, method=""), read_exact_file(prefix)
    )
    assert endpoints["GET /a"].exact and not endpoints["GET /b"].exact
    assert total.exact and abs(total.p95_ms - 95) <= 0.1
    assert read == open_model and abs(read.dropped_ratio - 1 / 81) < 1e-9
    assert read_exact_file(tmp_path / "absent") is None
    assert apply_exact({"GET /a": row()}, row(), None)[2] is None


def test_load_result_round_trips_exact_rows_and_the_open_model() -> None:
    histogram = new_histogram()
    record_ms(histogram, 42.0)
    exact = exact_row(row(), histogram)
    result = LoadResult(
        endpoints={exact.key: exact},
        total=exact_row(row(TOTAL_NAME, method=""), histogram),
        exit_code=0,
        duration_s=4.0,
        open_model=OpenModelResult(50, 49.5, 200, 198, 2, users=20, workers=2),
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["open_model"]["dropped_ratio"] == 0.01
    assert data["endpoints"]["GET /a"]["exact"] is True
    back = LoadResult.from_dict(data)
    assert back.open_model == result.open_model
    assert back.endpoints["GET /a"] == exact and back.total.exact
    # A closed-model result writes neither key, and an old dict still reads.
    closed = LoadResult(endpoints={}, total=row(TOTAL_NAME, method=""), exit_code=0, duration_s=1)
    assert "open_model" not in closed.to_dict() and "exact" not in closed.to_dict()["total"]
    assert LoadResult.from_dict(closed.to_dict()).open_model is None


def test_dropped_threshold_and_abort_rules() -> None:
    thresholds = Thresholds(max_fail_ratio=0.01, max_dropped_ratio=0.05)
    assert thresholds.active
    assert thresholds.check_dropped(scheduled=100, dropped=5) == []
    [violation] = thresholds.check_dropped(scheduled=100, dropped=6)
    assert violation.line() == (
        "fanout: threshold violated: --fanout-max-dropped-ratio 0.05: dropped-start ratio of "
        "the arrival schedule is 0.06"
    )
    assert "--fanout-max-dropped-ratio" in thresholds.to_args()
    # Not enough requests yet: not lost, whatever the ratio.
    assert thresholds.already_lost(requests=99, failures=99) is None
    assert thresholds.already_lost(requests=100, failures=1) is None
    assert thresholds.already_lost(requests=100, failures=2) == (
        "--fanout-max-fail-ratio 0.01: failure ratio 0.02 after 100 requests"
    )
    lost = thresholds.already_lost(requests=100, failures=0, scheduled=200, dropped=20)
    assert (
        lost
        == "--fanout-max-dropped-ratio 0.05: dropped-start ratio 0.1 after 200 scheduled starts"
    )
    assert Thresholds().already_lost(requests=10**6, failures=10**6) is None


def test_the_gates_locust_case_carries_the_exact_row() -> None:
    from pytest_fanout.gate.runs import load_case_record
    from pytest_fanout.gate.schema import LoadStats

    histogram = new_histogram()
    for ms in range(100, 1100):
        record_ms(histogram, ms / 10)  # 10.0 .. 109.9 ms
    exact = exact_row(row(), histogram)
    result = LoadResult(endpoints={exact.key: exact}, total=exact, exit_code=0, duration_s=5)
    stats = load_case_record(result, exact)["stats"]
    LoadStats.model_validate(stats)  # the gate's schema accepts the exact buckets
    assert stats["exact"] is True and abs(stats["p95_ms"] - 104.95) <= 0.1
    assert sum(stats["histogram"].values()) == 1000
