"""Thresholds set Locust's exit status: a p95 limit the sync endpoint cannot meet.

With n=10 calls of 100 ms each, /sync/10 takes about 1 s by construction, and
/async/10 about 0.1 s: a 500 ms limit sits 2x away from both, so a noisy
machine cannot flip the verdict.
"""

from __future__ import annotations

import re

from pytest_fanout.load import EXIT_THRESHOLD, VIOLATION_PREFIX
from tests.helpers import locust


def test_a_p95_limit_the_sync_endpoint_cannot_meet_exits_with_the_threshold_status() -> None:
    code, output, _ = locust(
        "-f",
        "locustfiles/",
        "--headless",
        "--run-time",
        "5s",
        "--users",
        "6",
        "--spawn-rate",
        "6",
        "--fanout-n",
        "10",
        "--fanout-upstream-delay-ms",
        "100",
        "--fanout-max-p95-ms",
        "500",
        "SyncUser",
        "AsyncUser",
    )
    assert code == EXIT_THRESHOLD, output
    assert code != 1  # not Locust's "there were failed requests"
    lines = [line for line in output.splitlines() if line.startswith(VIOLATION_PREFIX)]
    sync = [line for line in lines if "GET /sync/10" in line]
    assert len(sync) == 1, output
    # The p95 is exact (HdrHistogram): it may have tenths of a millisecond.
    expected = r"--fanout-max-p95-ms 500 ms: p95 of GET /sync/10 is (\d+(?:\.\d+)?) ms"
    match = re.fullmatch(re.escape(VIOLATION_PREFIX) + expected, sync[0])
    assert match and float(match[1]) > 500, sync[0]
    assert not [line for line in lines if "/async/10" in line], lines
    assert "Traceback" not in output


def test_a_run_where_nothing_completes_fails_with_its_own_lines() -> None:
    """Zero is not a pass: /sync/100 takes 10 s, the run 3 s, so no request completes.

    Beyond locust.conf's failure ratio (met: nothing failed), no threshold is
    set: "at least one completed request" always holds, per
    endpoint (the one tried, with no row in Locust's stats) and for the total.
    """
    code, output, _ = locust(
        "-f",
        "locustfiles/",
        "--headless",
        "--run-time",
        "3s",
        "--users",
        "1",
        "--spawn-rate",
        "1",
        "--fanout-n",
        "100",
        "SyncUser",
    )
    assert code == EXIT_THRESHOLD, output
    lines = [line for line in output.splitlines() if line.startswith(VIOLATION_PREFIX)]
    assert lines == [
        f"{VIOLATION_PREFIX}--fanout-min-completed 1: completed requests of GET /sync/100 is 0",
        f"{VIOLATION_PREFIX}--fanout-min-completed 1: completed requests of all endpoints"
        " (total) is 0",
    ], output
    assert "thresholds met" not in output
