"""Under Locust the buckets run on (issue 33): a Locust run on the embedded stack with a
rate-limited stub, and `fanout capacity`, name the limit that caps the service, from the
stubs' exact counts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pytest_fanout.load import MARKER_ENV, kill_marked
from tests.helpers import REPO, locust

pytestmark = pytest.mark.slow

APP_DIR = Path(__file__).parent / "ratelimit_app"


def test_locust_names_the_limit_that_caps_the_run() -> None:
    """The reference app's gather makes 10 calls a request; a 20/s stub caps it at 2 req/s,
    which 4 users, each sending back to back, pass at once."""
    code, output, _ = locust(
        "-f",
        "locustfiles/",
        "--headless",
        "--run-time",
        "3s",
        "--users",
        "4",
        "--spawn-rate",
        "4",
        "--fanout-rate-limit",
        "20/s",
        "AsyncUser",
    )
    assert "Traceback" not in output
    found = re.search(
        r"fanout: upstream '(\w+)' answered 429 to (\d+) of (\d+) calls; it allows 20/s and each "
        r"request calls it 10 times: at most 2 req/s here \(this run: [\d.]+/s\)",
        output,
    )
    assert found is not None, output[-3000:]
    rejected, calls = int(found[2]), int(found[3])
    assert 0 < rejected < calls


def test_capacity_names_the_limit_that_caps_a_path(tmp_path: Path) -> None:
    """`/price/{i}` calls a 20/s upstream once and fails on its 429: the search's knee is
    the limit, and the table says so (burst 5: a step's head start is 5 calls)."""
    out = tmp_path / "capacity.json"
    marker = uuid.uuid4().hex
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest_fanout.cli",
                "capacity",
                "--app",
                "prices:app",
                "--app-dir",
                str(APP_DIR),
                "--rate-limit",
                "20/s",
                "--burst",
                "5",
                "--delay-ms",
                "20",
                "--path",
                "/price/1",
                "--slo-p95-ms",
                "500",
                "--start-rps",
                "10",
                "--step-s",
                "4",
                "--precision",
                "0.5",  # the knee near the limit is all it checks: two 4 s steps fewer
                "--budget-s",
                "50",
                "--json",
                str(out),
            ],
            cwd=REPO,
            env={**os.environ, MARKER_ENV: marker},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        left = kill_marked(marker)
    assert not left, f"left behind: {left}"
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = json.loads(out.read_text())
    capacity = row["capacity_rps"]
    assert capacity is not None and 10 <= capacity <= 24, row
    said = (
        f"capacity {capacity:g} req/s: upstream 'default' allows 20/s and each request calls "
        "it once (at most 20 req/s)"
    )
    assert row["limited_by"] == said
    assert f"/price/1: {said}" in result.stdout
