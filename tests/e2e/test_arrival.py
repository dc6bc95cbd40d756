"""The open model on real processes: the rate held, dropped starts, the honest p99, abort.

Every run is a real Locust (a subprocess, a few seconds of load) against a
real stack on loopback. Counts are asserted exactly where they are exact
(what the stub upstream saw against what Locust sent and started); rates and
latencies only as ratios with wide margins.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.load import (
    EXIT_THRESHOLD,
    EXIT_USAGE,
    MARKER_ENV,
    VIOLATION_PREFIX,
    kill_marked,
    run_locust,
)
from pytest_fanout.servers.stack import Stack, StubUpstreamServer
from tests.helpers import REPO, locust, wait_until

pytestmark = pytest.mark.slow


def test_below_capacity_the_rate_is_held_within_5_percent_and_nothing_is_dropped(
    tmp_path: Path,
) -> None:
    # /async/2 at 50 ms answers in ~55 ms: 20/s needs ~1.1 users in flight; the pool has 10.
    with Stack(behaviour=Behaviour(delay_ms=50)) as stack:
        assert stack.app is not None
        result = run_locust(
            stack.app.url,
            users=10,
            run_time_s=5,
            n=2,
            user_classes=["AsyncUser"],
            extra_args=["--fanout-arrival-rate", "20"],
            workdir=tmp_path,
        )
        upstream_saw = stack.upstream.stats()["requests"]
    assert result.exit_code == 0, result.output
    om = result.open_model
    assert om is not None, result.output
    assert om.target_rps == 20 and om.arrivals == "constant" and om.users == 10
    assert om.dropped == 0, result.output
    assert abs(om.achieved_rps - 20) <= 0.05 * 20, om
    # Every start is one request: Locust saw at most the starts, all but those cut at stop.
    assert om.started - 10 <= result.total.requests <= om.started
    assert om.scheduled >= om.started >= om.scheduled - 2
    # The app made 2 upstream calls for each request Locust saw (and for those cut at stop).
    assert 2 * result.total.requests <= upstream_saw <= 2 * om.started
    # Exact percentiles (HdrHistogram), in the result and its JSON.
    assert result.total.exact and result.endpoint("/async/2").exact
    assert 50 <= result.total.p50_ms <= result.total.p99_ms <= result.total.max_ms
    assert result.to_dict()["open_model"]["dropped"] == 0
    assert "fanout: open model: target 20/s (constant)" in result.output


def test_poisson_arrivals_average_the_rate(tmp_path: Path) -> None:
    result = run_locust(
        users=30,
        run_time_s=5,
        n=2,
        user_classes=["AsyncUser"],
        extra_args=[
            "--fanout-arrival-rate",
            "100",
            "--fanout-arrivals",
            "poisson",
            "--fanout-upstream-delay-ms",
            "50",
        ],
        workdir=tmp_path,
    )
    om = result.open_model
    assert result.exit_code == 0 and om is not None, result.output
    assert om.arrivals == "poisson" and om.dropped == 0
    # ~400 arrivals: one standard deviation is 5%; 20% is four.
    assert abs(om.achieved_rps - 100) <= 0.2 * 100, om


def test_open_model_shows_the_queue_a_closed_model_hides_and_counts_dropped_starts(
    tmp_path: Path,
) -> None:
    # /blocking/1 at 50 ms holds the app's event loop ~50 ms per request: ~20/s at most.
    common = dict(users=5, run_time_s=5, n=1, user_classes=["BlockingUser"])
    delay = ["--fanout-upstream-delay-ms", "50"]
    closed = run_locust(**common, extra_args=delay, workdir=tmp_path / "closed")
    opened = run_locust(
        **common,
        extra_args=[*delay, "--fanout-arrival-rate", "60", "--fanout-max-dropped-ratio", "0.1"],
        workdir=tmp_path / "open",
    )
    assert closed.exit_code == 0 and closed.open_model is None, closed.output
    om = opened.open_model
    assert om is not None, opened.output
    # 60/s asked of a route that serves ~20/s with 5 users: most starts found no free user.
    assert om.dropped > 0.2 * om.scheduled, om
    assert om.achieved_rps < 0.6 * 60, om
    # The closed model reports ~5 x 50 ms (its own queue of 5); the open model adds the
    # wait for a free user, up to the 1 s grace: p99 several times higher.
    assert closed.total.exact and opened.total.exact
    assert opened.total.p99_ms >= 2 * closed.total.p99_ms, (
        closed.total.p99_ms,
        opened.total.p99_ms,
    )
    # Dropped starts can fail a threshold: its own line, exit status 3.
    assert opened.exit_code == EXIT_THRESHOLD, opened.output
    assert any(
        line.startswith(f"{VIOLATION_PREFIX}--fanout-max-dropped-ratio 0.1: dropped-start ratio")
        for line in opened.violations
    ), opened.output


def test_abort_on_fail_ends_a_lost_run_early_with_the_threshold_status() -> None:
    # The "service" answers 500 to everything: the failure ratio is lost from the start.
    with StubUpstreamServer(Behaviour(delay_ms=0, error_rate=1.0)) as failing:
        began = time.monotonic()
        code, output, _ = locust(
            "-f",
            "locustfiles/",
            "--headless",
            "--host",
            failing.url,
            "--users",
            "2",
            "--run-time",
            "40s",
            "--fanout-max-fail-ratio",
            "0.01",
            "--fanout-abort-on-fail",
            "--fanout-abort-after",
            "20",
            "--fanout-arrival-rate",
            "50",
            "AsyncUser",
            timeout=90,
        )
        elapsed = time.monotonic() - began
    assert code == EXIT_THRESHOLD, output
    assert "fanout: aborting the run: --fanout-max-fail-ratio 0.01: failure ratio 1" in output
    assert f"{VIOLATION_PREFIX}--fanout-max-fail-ratio 0.01" in output
    assert elapsed < 25, f"the 40 s run was not cut short ({elapsed:.0f} s)"
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "argument --fanout-arrival-rate: 0 must be > 0"),
        ("-5", "argument --fanout-arrival-rate: -5 must be a finite number >= 0"),
        ("fast", "argument --fanout-arrival-rate: 'fast' is not a number"),
        ("1e9", "argument --fanout-arrival-rate: 1e9 is above the limit of 100,000/s"),
        ("inf", "argument --fanout-arrival-rate: inf must be a finite number >= 0"),
    ],
)
def test_a_bad_arrival_rate_is_one_line_and_a_usage_status(value: str, message: str) -> None:
    code, output, _ = locust(
        "-f", "locustfiles/", "--run-time", "2s", "--fanout-arrival-rate", value
    )
    assert code == EXIT_USAGE, output
    assert message in output
    assert "Traceback" not in output and "embedded stack" not in output


OWN_LOCUSTFILE = """
from pytest_fanout.locust import FanoutUser, task


class Basket(FanoutUser):
    @task
    def basket(self):
        self.get("/async/2")
        self.get("/sync/1")
"""


def test_a_fanout_user_subclass_runs_on_the_schedule(tmp_path: Path) -> None:
    """A user's own FanoutUser: each start is one run of its task (here two requests)."""
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(OWN_LOCUSTFILE)
    result = run_locust(
        users=5,
        run_time_s=5,
        locustfile=locustfile,
        extra_args=["--fanout-arrival-rate", "10", "--fanout-upstream-delay-ms", "50"],
        workdir=tmp_path / "run",
    )
    om = result.open_model
    assert result.exit_code == 0 and om is not None, result.output
    assert om.dropped == 0 and abs(om.achieved_rps - 10) <= 0.05 * 10, om
    first, second = result.endpoint("/async/2"), result.endpoint("/sync/1")
    assert first.exact and second.exact
    # One start, one basket: both requests once per start (a basket cut at stop: at most 5).
    assert om.started - 5 <= first.requests <= om.started
    assert first.requests - 5 <= second.requests <= first.requests


def test_at_the_highest_rate_the_run_still_obeys_run_time_and_sigterm(tmp_path: Path) -> None:
    """100,000 starts/s against two users: the schedule falls behind at once, yet it yields,
    so Locust's --run-time ends the run on time and a SIGTERM ends it at once; the starts
    no user could take are dropped and counted, not queued without bound."""
    with StubUpstreamServer(Behaviour(delay_ms=0, record_requests=0)) as fast:
        common = ["-f", "locustfiles/", "--headless", "--host", fast.url, "--users", "2"]
        common += ["--fanout-arrival-rate", "100000", "--fanout-start-grace-ms", "0"]
        began = time.monotonic()
        code, output, _ = locust(*common, "--run-time", "3s", "AsyncUser", timeout=60)
        elapsed = time.monotonic() - began
        assert "fanout: open model: target 100000/s" in output, output[-2000:]
        assert "dropped" in output and "Traceback" not in output
        # Start-up, 3 s, shut-down: far below what a loop that never yields would take.
        assert elapsed < 25, f"a 3 s run took {elapsed:.0f} s"
        # The stub's {"ok":true} is not a fan-out answer: failed requests, the threshold's
        # status (the run went to its end and was judged).
        assert code == EXIT_THRESHOLD, output[-2000:]

        log_path = tmp_path / "locust.log"
        marker = uuid.uuid4().hex
        env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "locust", *common, "--run-time", "120s", "AsyncUser"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: "All users spawned" in log_path.read_text(), 60, "spawned")
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            proc.wait(timeout=30)
            stopped_after = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            left = kill_marked(marker)
    assert not left, f"left behind: {left}"
    assert stopped_after < 10, f"SIGTERM took {stopped_after:.1f} s"
