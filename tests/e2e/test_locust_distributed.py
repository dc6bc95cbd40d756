"""Distributed Locust on loopback: one master plus two workers, and --processes 2.

Only the master starts the embedded stack (workers receive its URL with each
spawn message) and only the master checks thresholds; nothing is left after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pytest_fanout.load import (
    EXIT_THRESHOLD,
    MARKER_ENV,
    VIOLATION_PREFIX,
    kill_marked,
    marked_processes,
    parse_stats_json,
)
from tests.helpers import REPO, free_port, locust, locust_master_and_workers, wait_until

pytestmark = pytest.mark.slow

STACK_LINE = "fanout: embedded stack: app "


def _own_master_port() -> list[str]:
    """--processes binds Locust's master to port 5557 and its forked workers connect there
    unless told: two such runs at once (two xdist workers) collided, and one waited out its
    60 to 90 s timeout."""
    port = str(free_port())
    return ["--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port]


def test_master_and_two_workers_on_loopback(tmp_path: Path) -> None:
    codes, out, marker = locust_master_and_workers(
        tmp_path,
        [
            "--headless",
            "--users",
            "6",
            "--spawn-rate",
            "6",
            "--run-time",
            "5s",
            "--json-file",
            str(tmp_path / "master"),
            "--fanout-max-p95-ms",
            "1",
            "AsyncUser",
        ],
    )

    # Workers connected and reported: the master's numbers are theirs.
    assert "2 workers connected" in out["master"], out["master"]
    endpoints, total, _ = parse_stats_json(json.loads((tmp_path / "master.json").read_text()))
    assert list(endpoints) == ["GET /async/10"] and total.requests > 0
    # Only the master started (and stopped) the stack.
    assert out["master"].count(STACK_LINE) == 1
    assert "fanout: embedded stack stopped" in out["master"]
    assert STACK_LINE not in out["w1"] + out["w2"]
    # Thresholds are checked on the master, which alone carries the verdict.
    assert codes["master"] == EXIT_THRESHOLD, out["master"]
    assert f"{VIOLATION_PREFIX}--fanout-max-p95-ms 1 ms: p95 of GET /async/10" in out["master"]
    assert codes["w1"] == codes["w2"] == 0, out
    assert VIOLATION_PREFIX not in out["w1"] + out["w2"]
    assert marked_processes(marker) == []


def test_processes_2_forks_workers_but_one_stack(tmp_path: Path) -> None:
    code, output, _ = locust(
        "-f",
        "locustfiles/",
        "--headless",
        "--processes",
        "2",
        *_own_master_port(),
        "--users",
        "6",
        "--spawn-rate",
        "6",
        "--run-time",
        "4s",
        "--json-file",
        str(tmp_path / "stats"),
        "--fanout-min-rps",
        "0.5",
        "AsyncUser",
        "AsyncSemUser",
        timeout=90,
    )
    assert code == 0, output
    assert "2 workers connected" in output
    assert output.count(STACK_LINE) == 1 and output.count("fanout: embedded stack stopped") == 1
    assert output.count("fanout: thresholds met: ") == 1  # the master's check only
    endpoints, _, _ = parse_stats_json(json.loads((tmp_path / "stats.json").read_text()))
    assert sorted(endpoints) == ["GET /async/10", "GET /async_sem/10/5"]
    assert all(e.requests > 0 and e.failures == 0 for e in endpoints.values())


def test_workers_leave_within_seconds_of_a_sigkilled_master(tmp_path: Path) -> None:
    """kill -9 of the master under --processes 2: its forked workers notice the new
    parent and leave, and the stack's processes follow their dead parent too."""
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "locust.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                "locustfiles/",
                "--headless",
                "--processes",
                "2",
                *_own_master_port(),
                "--users",
                "4",
                "--spawn-rate",
                "4",
                "--run-time",
                "60s",
                "AsyncUser",
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "2 workers connected" in log_path.read_text(), 60, "workers up")
        # master + 2 workers + the stub upstream + the app, all carrying the marker
        wait_until(lambda: len(marked_processes(marker)) >= 5, 10, "five marked processes")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = time.monotonic()
        wait_until(lambda: marked_processes(marker) == [], 10, "every process gone")
        gone_after = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = kill_marked(marker)
    assert not left, f"left behind: {left}"
    output = log_path.read_text()
    assert output.count("the master (pid") == 2, output  # each worker says why it leaves
    assert gone_after < 10
