"""`fanout capacity` as a user types it: bad input in one line, and a short real search.

The real search is kept short (one path, 2 s steps, a 20 s budget): it shows
the command steps the rate, prints the table, writes the JSON and the PNG,
stays within its budget and leaves no process. The committed figures under
docs/ come from the full run docs/load-testing.md gives (about 3 minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pytest_fanout.limits import ExitCode
from pytest_fanout.load import MARKER_ENV, kill_marked
from tests.helpers import REPO, free_port


def fanout(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Run `fanout ARGS` bounded and marked; return it and whatever it left behind (killed)."""
    marker = uuid.uuid4().hex
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest_fanout.cli", *args],
            cwd=REPO,
            env={**os.environ, MARKER_ENV: marker},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        left = kill_marked(marker)
    return result, left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo-p95-ms", "fast"], "argument --slo-p95-ms: 'fast' is not a number"),
        (["--slo-p95-ms", "0"], "argument --slo-p95-ms: 0 must be > 0"),
        (["--slo-p95-ms", "500", "--start-rps", "0"], "argument --start-rps: 0 must be > 0"),
        (["--slo-p95-ms", "500", "--start-rps", "-3"], "argument --start-rps: -3 must be"),
        (["--slo-p95-ms", "500", "--max-rps", "lots"], "argument --max-rps: 'lots' is not a"),
        (
            ["--slo-p95-ms", "500", "--budget-s", "10"],
            "--budget-s 10 is too small for one step per path (3 x 7 s)",
        ),
        (["--slo-p95-ms", "500", "--step-s", "1"], "--step-s 1 is too short to be steady"),
        (["--budget-s", "60"], "the following arguments are required: --slo-p95-ms"),
        (
            ["--slo-p95-ms", "500", "--start-rps", "1e9"],
            "argument --start-rps: 1e9 is above the limit of 100,000/s",
        ),
        (["--slo-p95-ms", "500", "--max-rps", "1e7"], "--max-rps: 1e7 is above the limit"),
        (["--slo-p95-ms", "500", "--max-users", "10000000"], "is above the limit of 100,000"),
        (["--slo-p95-ms", "500", "--processes", "5000"], "above the limit of 256 processes"),
        (["--slo-p95-ms", "500", "--budget-s", "1e12"], "above the limit of 86,400 s"),
        (["--slo-p95-ms", "500", "--step-s", "999999"], "above the limit of 86,400 s"),
        (["--slo-p95-ms", "1e300"], "above the limit of 3,600,000 ms"),
        (["--slo-p95-ms", "500", "--n", "1000000"], "above the limit of 10,000"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    began = time.monotonic()
    result, left = fanout("capacity", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("fanout capacity: error: ")
    assert "Traceback" not in result.stdout + result.stderr
    assert not left and time.monotonic() - began < 30  # nothing was started


@pytest.mark.slow
def test_a_short_search_writes_the_table_json_and_png_within_its_budget(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "capacity.json", tmp_path / "capacity.png"
    out_md = tmp_path / "capacity.md"
    budget = 20
    began = time.monotonic()
    result, left = fanout(
        "capacity",
        "--slo-p95-ms",
        "400",
        "--path",
        "/sync/2",
        "--delay-ms",
        "50",
        "--start-rps",
        "10",
        "--step-s",
        "2",
        "--budget-s",
        str(budget),
        "--json",
        str(out_json),
        "--png",
        str(out_png),
        "--markdown",
        str(out_md),
        timeout=budget + 60,
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    assert not left, f"left behind: {left}"
    # The budget bounds the search (plus the stack's start and stop).
    assert elapsed < budget + 20, elapsed
    header = next(line for line in result.stdout.splitlines() if line.startswith("path"))
    assert header.split()[:3] == ["path", "capacity", "(req/s)"]
    steps = [line for line in result.stdout.splitlines() if line.startswith("  /sync/2 at ")]
    assert steps and steps[0].startswith("  /sync/2 at 10/s")
    [row] = json.loads(out_json.read_text())
    assert row["path"] == "/sync/2" and row["steps"]
    assert {"capacity_rps", "p95_ms", "first_failed_rps", "why"} <= set(row)
    # /sync/2 at 50 ms takes ~100 ms: 10/s meets a 400 ms SLO.
    assert row["capacity_rps"] is not None and row["capacity_rps"] >= 10, row
    assert row["p95_ms"] <= 400
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = out_md.read_text()
    assert markdown.startswith("SLO: p95 <= 400 ms") and "| /sync/2 |" in markdown


@pytest.mark.slow
def test_a_search_drives_a_master_and_two_workers(tmp_path: Path) -> None:
    """--expect-workers: each step is a Locust master; workers (here on loopback, restarted
    after each step as a loop on another host would) connect to it."""
    port = str(free_port())
    locustfile = REPO / "pytest_fanout" / "load" / "capacity_locustfile.py"
    worker = (
        f"for i in 1 2 3 4 5 6; do {sys.executable} -m locust -f {locustfile} --worker "
        f"--master-host 127.0.0.1 --master-port {port}; done"
    )
    workers_marker = uuid.uuid4().hex
    loops = [
        subprocess.Popen(
            ["bash", "-c", worker],
            cwd=tmp_path,
            env={**os.environ, MARKER_ENV: workers_marker},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        result, left = fanout(
            "capacity",
            "--slo-p95-ms",
            "400",
            "--path",
            "/async/2",
            "--delay-ms",
            "50",
            "--start-rps",
            "20",
            "--step-s",
            "2",
            "--budget-s",
            "12",
            "--expect-workers",
            "2",
            "--master-bind-port",
            port,
            "--json",
            str(tmp_path / "capacity.json"),
            timeout=90,
        )
    finally:
        kill_marked(workers_marker)
        for loop in loops:
            loop.wait(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not left, f"the command left behind: {left}"
    [row] = json.loads((tmp_path / "capacity.json").read_text())
    first = row["steps"][0]
    assert first["rate"] == 20 and first["ok"], row
    assert abs(first["achieved_rps"] - 20) <= 0.1 * 20, first


def test_a_host_that_does_not_answer_is_one_line_before_any_step() -> None:
    port = free_port()  # closed again: nothing listens there
    result, left = fanout(
        "capacity", "--slo-p95-ms", "100", "--host", f"http://127.0.0.1:{port}", "--path", "/x"
    )
    assert result.returncode == ExitCode.TARGET_UNUSABLE and not left
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"fanout capacity: error: --host http://127.0.0.1:{port} does not answer: "
        "connection refused"
    ], result.stderr
    assert "at " not in result.stdout  # no step ran


DIES = """
import os
from fastapi import FastAPI

app = FastAPI()
seen = 0


@app.get("/die")
async def die():
    global seen
    seen += 1
    if seen >= 3:  # the check before the search is the first; the first step kills it
        os._exit(3)
    return {"ok": True}
"""


def test_an_app_that_dies_stops_the_search_with_its_death(tmp_path: Path) -> None:
    """Issue 32 #8: the search used to bisect through 100% connection-refused steps and
    print a capacity, exit 0; the app's death is the result: one line, exit 4."""
    (tmp_path / "dies.py").write_text(DIES)
    result, left = fanout(
        "capacity",
        "--slo-p95-ms",
        "500",
        "--app",
        "dies:app",
        "--app-dir",
        str(tmp_path),
        "--path",
        "/die",
        "--start-rps",
        "5",
        "--step-s",
        "2",
        "--budget-s",
        "40",
        timeout=100,
    )
    assert result.returncode == ExitCode.TARGET_UNUSABLE, result.stdout + result.stderr
    assert not left, f"left behind: {left}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "fanout capacity: error: the app process died (exit status 3) during /die at 5/s:"
        " no capacity to report"
    ], result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("  /die at ")]
    assert len(steps) == 1, result.stdout  # no step after the death
    assert "capacity" not in result.stdout.split(steps[0])[1]  # and no table


def test_processes_bind_the_master_to_loopback_on_a_free_port(tmp_path: Path) -> None:
    """Issue 32 #9: `--processes 2` started Locust's master on *:5557, so a second run (here a
    socket holding 127.0.0.1:5557) broke the first; now each run's master is on 127.0.0.1
    at a free port."""
    import socket

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 5557))
        holder.listen()
    except OSError:
        pass  # held by another run already: the same situation
    try:
        result, left = fanout(
            "capacity",
            "--slo-p95-ms",
            "2000",
            "--path",
            "/sync/1",
            "--delay-ms",
            "10",
            "--start-rps",
            "5",
            "--max-rps",
            "5",
            "--step-s",
            "2",
            "--budget-s",
            "10",
            "--processes",
            "2",
            "--json",
            str(tmp_path / "capacity.json"),
            timeout=90,
        )
    finally:
        holder.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not left, f"left behind: {left}"
    [row] = json.loads((tmp_path / "capacity.json").read_text())
    assert row["steps"] and row["steps"][0]["requests"] > 0, row
