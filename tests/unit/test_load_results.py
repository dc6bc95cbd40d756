"""Unit tests of load.py's pure logic: percentiles, JSON parsing, thresholds, result shape.

No Locust run here (and no `import locust`: gevent would patch this process);
the JSON entries are written in the shape Locust's `--json-file` produces.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from pytest_fanout.limits import fraction, non_negative_float, positive_int
from pytest_fanout.load import (
    TOTAL_NAME,
    VIOLATION_PREFIX,
    EndpointResult,
    LoadResult,
    Thresholds,
    locust_command,
    parse_stats_json,
    percentile_from_histogram,
)


def entry(
    name: str, times: dict[int, int], failures: int = 0, start: float = 1000.0, last: float = 1010.0
) -> dict:
    requests = sum(times.values())
    return {
        "name": name,
        "method": "GET",
        "last_request_timestamp": last,
        "start_time": start,
        "num_requests": requests,
        "num_none_requests": 0,
        "num_failures": failures,
        "total_response_time": sum(t * c for t, c in times.items()),
        "max_response_time": max(times),
        "min_response_time": min(times),
        "total_content_length": 0,
        # JSON object keys are strings, as in Locust's file.
        "response_times": {str(t): c for t, c in times.items()},
        "num_reqs_per_sec": {},
        "num_fail_per_sec": {},
    }


HISTOGRAMS = [
    {100: 90, 200: 9, 1000: 1},
    {110: 95, 150: 5},
    {1000: 8, 1100: 2},
    {42: 1},
    {10: 3, 20: 3, 30: 3, 40: 1},
]
QS = [0.5, 0.66, 0.95, 0.99, 1.0]


def test_percentile_is_locusts_own_rule() -> None:
    """Compared with Locust's function, run in a SUBPROCESS (gevent must not patch pytest)."""
    script = (
        "import json, sys\n"
        "from locust.stats import calculate_response_time_percentile as p\n"
        "cases = json.loads(sys.argv[1])\n"
        "print(json.dumps([[p({int(k): v for k, v in h.items()}, sum(h.values()), q)"
        " for q in cases['qs']] for h in cases['histograms']]))\n"
    )
    cases = json.dumps({"histograms": HISTOGRAMS, "qs": QS})
    out = subprocess.run(
        [sys.executable, "-c", script, cases],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    expected = json.loads(out)
    ours = [
        [
            percentile_from_histogram({float(k): v for k, v in h.items()}, sum(h.values()), q)
            for q in QS
        ]
        for h in HISTOGRAMS
    ]
    assert ours == expected
    assert percentile_from_histogram({}, 0, 0.95) == 0


def test_parse_stats_json_rows_and_total() -> None:
    entries = [
        entry("/async/10", {110: 95, 150: 5}, start=1000.0, last=1009.5),
        entry("/sync/10", {1000: 8, 1100: 2}, failures=1, start=1000.5, last=1010.0),
    ]
    endpoints, total, duration = parse_stats_json(json.loads(json.dumps(entries)))
    assert duration == pytest.approx(10.0)
    fast, slow = endpoints["GET /async/10"], endpoints["GET /sync/10"]
    assert (fast.requests, fast.failures, fast.rps) == (100, 0, pytest.approx(10.0))
    assert (fast.p50_ms, fast.p95_ms, fast.p99_ms) == (110, 150, 150)
    assert slow.fail_ratio == pytest.approx(0.1)
    assert slow.rps == pytest.approx(1.0)
    assert total.name == TOTAL_NAME and total.requests == 110 and total.failures == 1
    assert total.p95_ms == 1000  # the merged histogram, as Locust's "Aggregated" row
    assert total.max_ms == 1100 and total.min_ms == 110


def test_thresholds_name_the_limit_and_the_value() -> None:
    rows = [
        EndpointResult("GET", "/async/10", 100, 0, 50.0, 110, 130, 150),
        EndpointResult("GET", "/sync/10", 10, 2, 5.0, 1000, 1100, 1100),
        EndpointResult("", TOTAL_NAME, 110, 2, 55.0, 110, 1000, 1100),
    ]
    thresholds = Thresholds(max_fail_ratio=0.1, max_p95_ms=500, min_rps=10)
    lines = [v.line() for v in thresholds.check(rows)]
    assert lines == [
        f"{VIOLATION_PREFIX}--fanout-max-fail-ratio 0.1: failure ratio of GET /sync/10 is 0.2",
        f"{VIOLATION_PREFIX}--fanout-max-p95-ms 500 ms: p95 of GET /sync/10 is 1100 ms",
        f"{VIOLATION_PREFIX}--fanout-min-rps 10/s: requests/s of GET /sync/10 is 5/s",
        f"{VIOLATION_PREFIX}--fanout-max-p95-ms 500 ms: p95 of all endpoints (total) is 1000 ms",
    ]
    assert Thresholds().check(rows) == [] and not Thresholds().active


def test_zero_is_not_a_pass_an_endpoint_or_total_with_no_completed_request_fails() -> None:
    rows = [
        EndpointResult("GET", "/async/10", 5, 0, 1.0, 110, 130, 150),
        EndpointResult("GET", "/sync/100", 0, 0, 0.0, 0, 0, 0),  # tried, never answered
        EndpointResult("GET", "/broken", 3, 3, 0.5, 10, 10, 10),  # answered, all failed
        EndpointResult("", TOTAL_NAME, 0, 0, 0.0, 0, 0, 0),
    ]
    lines = [v.line() for v in Thresholds().check(rows)]
    assert lines == [
        f"{VIOLATION_PREFIX}--fanout-min-completed 1: completed requests of GET /sync/100 is 0",
        f"{VIOLATION_PREFIX}--fanout-min-completed 1: completed requests of GET /broken is 0",
        f"{VIOLATION_PREFIX}--fanout-min-completed 1: completed requests of all endpoints"
        " (total) is 0",
    ]
    assert Thresholds(min_completed=6).check(rows[:1])[0].value == 5
    assert Thresholds().to_args() == []  # the default is not passed on
    assert Thresholds(min_completed=3).to_args() == ["--fanout-min-completed", "3"]


def test_thresholds_from_options_accept_web_ui_strings_and_refuse_nonsense() -> None:
    # The dests are words (Locust's web UI makes its labels from them), not the flags.
    options = argparse.Namespace(
        fanout_max_failure_ratio="0.05", fanout_max_latency_ms="", fanout_min_throughput=2.0
    )
    assert Thresholds.from_options(options) == Thresholds(max_fail_ratio=0.05, min_rps=2.0)
    with pytest.raises(ValueError, match="--fanout-max-p95-ms: 'abc' is not a number"):
        Thresholds.from_options(argparse.Namespace(fanout_max_latency_ms="abc"))
    with pytest.raises(ValueError, match="--fanout-min-completed: 0 must be at least 1"):
        Thresholds.from_options(argparse.Namespace(fanout_min_completed="0"))


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_int, "0", "must be at least 1"),
        (positive_int, "x", "is not an integer"),
        (non_negative_float, "-1", ">= 0"),
        (non_negative_float, "nan", ">= 0"),
        (fraction, "1.5", "between 0 and 1"),
    ],
)
def test_argument_types_refuse_nonsense(parse, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def test_result_round_trips_through_json() -> None:
    endpoints, total, duration = parse_stats_json([entry("/async/10", {110: 10})])
    result = LoadResult(
        endpoints=endpoints,
        total=total,
        exit_code=0,
        duration_s=duration,
        name="t",
        host="http://127.0.0.1:1",
        users=2,
        spawn_rate=2.0,
        run_time_s=3,
        user_classes=["AsyncUser"],
        options={"fanout_n": 10},
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["kind"] == "locust" and data["schema"] == 1
    assert list(data["endpoints"]["GET /async/10"]) == [
        "method",
        "name",
        "requests",
        "failures",
        "fail_ratio",
        "rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "avg_ms",
        "min_ms",
        "max_ms",
        "histogram",
    ]
    again = LoadResult.from_dict(data)
    assert again.to_dict() == data
    assert again.endpoint("/async/").requests == 10
    with pytest.raises(KeyError, match="0 endpoints match"):
        again.endpoint("/sync/")


def test_locust_command_is_bounded_and_headless(tmp_path) -> None:
    command = locust_command(
        "locustfiles",
        host=None,
        users=4,
        spawn_rate=4,
        run_time_s=3,
        report_prefix=tmp_path / "r",
        user_classes=["AsyncUser"],
        thresholds=Thresholds(max_p95_ms=500),
        n=10,
    )
    assert command[1:3] == ["-m", "locust"]
    assert "--headless" in command and command[command.index("--run-time") + 1] == "3s"
    assert "--host" not in command  # no host: the harness starts the embedded stack
    assert command[command.index("--fanout-max-p95-ms") + 1] == "500"
    assert command[-1] == "AsyncUser"
