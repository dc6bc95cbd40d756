"""One declaration drives every front end: `[tool.fanout]` in a project's pyproject.toml.

A small delivery service of our own (tests/e2e/spec_app/: two upstreams, routed
JSON answers it parses, a stub handler) is declared once, then run as its user
would, in a fresh directory: `pytest` with no ini and no option, `fanout measure`
with no flag, and `locust -f locustfile.py` with no --fanout-* option. Without the
declared routes the service answers 500, so every pass proves the spec reached
the stubs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pytest_fanout.limits import ExitCode
from pytest_fanout.load import MARKER_ENV, kill_marked

APP = Path(__file__).with_name("spec_app")
RUN_TIMEOUT_S = 120


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The delivery project in a fresh directory, as its user has it."""
    for name in ("delivery.py", "geo_stubs.py", "pyproject.toml", "locustfile.py"):
        shutil.copy(APP / name, tmp_path / name)
    shutil.copy(APP / "delivery_tests.py", tmp_path / "test_delivery.py")
    return tmp_path


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    finally:
        assert not kill_marked(marker), "a process was left behind"


def test_pytest_reads_the_declaration(project: Path) -> None:
    result = run(project, "pytest", "-p", "no:cacheprovider", "-q", "test_delivery.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_fanout_measure_reads_the_declaration(project: Path) -> None:
    result = run(project, "pytest_fanout.cli", "measure", "/deliver/5", "--n", "5", "--repeat", "2")
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert "delivery:app" in result.stdout


def test_a_one_off_route_on_the_command_line(project: Path) -> None:
    # Without the geo route the service cannot parse the answer: a 500, a failed check.
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.split('routes = [{ method = "POST"')[0])
    failed = run(project, "pytest_fanout.cli", "measure", "/deliver/2", "--repeat", "1")
    assert failed.returncode == ExitCode.FAILED, failed.stdout + failed.stderr
    assert "500" in failed.stderr
    routed = run(
        project,
        "pytest_fanout.cli",
        "measure",
        "/deliver/2",
        "--repeat",
        "1",
        "--route",
        'geo-api POST /zone {"zone": "Q"}',
    )
    assert routed.returncode == ExitCode.OK, routed.stdout + routed.stderr


def test_locust_reads_the_declaration(project: Path) -> None:
    result = run(
        project,
        "locust",
        "-f",
        "locustfile.py",
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "3s",
        "--only-summary",
        "--fanout-max-fail-ratio",
        "0",
    )
    output = result.stdout + result.stderr
    assert result.returncode == ExitCode.OK, output
    for name in ("stock", "geo-api"):
        assert f"fanout: embedded stack: upstream {name} http://127.0.0.1:" in output, output
    assert "delay 40 ms" in output and "delay 10 ms" in output  # each upstream's own delay


def test_a_bad_declaration_is_one_line_everywhere(project: Path) -> None:
    text = (project / "pyproject.toml").read_text().replace("delay_ms = 10", "delay_ms = 'x'")
    (project / "pyproject.toml").write_text(text)
    line = "pyproject.toml: tool.fanout.upstreams.geo-api.delay_ms: expected a number, got 'x'"
    for args, code in (
        (("pytest", "-q", "test_delivery.py"), pytest.ExitCode.USAGE_ERROR),
        (("pytest_fanout.cli", "measure", "/deliver/1"), ExitCode.USAGE),
        (("locust", "-f", "locustfile.py", "--headless", "-t", "1s"), ExitCode.USAGE),
    ):
        result = run(project, *args)
        output = result.stdout + result.stderr
        assert result.returncode == code, (args, output)
        assert line in output, (args, output)
        assert "Traceback" not in output, (args, output)
