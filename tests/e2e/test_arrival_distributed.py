"""The arrival rate split over Locust workers: one master plus two workers on loopback.

Each worker runs its share of the schedule (its users / all users) and sends
its exact histograms and counts to the master (Locust's custom messages); the
master merges them. The total rate must hold within 10%, and nothing is left.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pytest_fanout.load import MARKER_ENV, kill_marked, marked_processes, parse_stats_json
from pytest_fanout.load.exact import apply_exact, read_exact_file
from tests.helpers import REPO

pytestmark = pytest.mark.slow

RATE = 40


def free_port() -> int:
    # Locust's master binds its own port; this is the best a caller can do (loopback only).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_master_and_two_workers_hold_the_total_rate(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    port = str(free_port())
    base = [sys.executable, "-m", "locust", "-f", "locustfiles/"]
    master = [
        *base,
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        port,
        "--expect-workers",
        "2",
        "--expect-workers-max-wait",
        "30",
        "--headless",
        "--users",
        "10",
        "--spawn-rate",
        "10",
        "--run-time",
        "6s",
        "--json-file",
        str(tmp_path / "master"),
        "--fanout-arrival-rate",
        str(RATE),
        "--fanout-n",
        "2",
        "--fanout-upstream-delay-ms",
        "50",
        "AsyncUser",
    ]
    worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    commands = {"master": master, "w1": worker, "w2": worker}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with open(tmp_path / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        codes = {name: proc.wait(timeout=90) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        left = kill_marked(marker)
    out = {name: (tmp_path / f"{name}.log").read_text() for name in commands}
    assert not left, f"left behind: {left}"
    assert codes == {"master": 0, "w1": 0, "w2": 0}, out
    assert "2 workers connected" in out["master"], out["master"]

    endpoints, total, _ = parse_stats_json(json.loads((tmp_path / "master.json").read_text()))
    endpoints, total, open_model = apply_exact(
        endpoints, total, read_exact_file(tmp_path / "master")
    )
    assert open_model is not None, out["master"]
    # Both workers reported; their shares add up to the asked rate.
    assert open_model.workers == 2 and open_model.users == 10, open_model
    assert abs(open_model.achieved_rps - RATE) <= 0.10 * RATE, open_model
    assert open_model.dropped == 0, open_model
    assert "workers sent their final numbers" not in out["master"]
    # The master's exact histogram holds every worker's requests.
    assert total.exact and endpoints["GET /async/2"].exact
    assert open_model.started - 10 <= total.requests <= open_model.started
    assert sum(total.histogram.values()) == total.requests  # every worker's final report
    assert marked_processes(marker) == []
