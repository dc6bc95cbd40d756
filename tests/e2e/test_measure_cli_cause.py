"""`fanout measure` on a route that answers 500 names the app's own cause in its one line
(the exception the app logged, secrets masked); found on a public GitHub users service
(docs/field.md): "answered 500, expected 200: Internal Server Error" and nothing else, from
`fanout measure` and `fanout serve` alike. Its fix answers 200 and is measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).parent / "boom_app"


def measure(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "measure", "-q", "--repeat", "1"]
        + ["--app-dir", str(APP_DIR), "--app", "main:app", path],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("path", ["/boom", "/fixed"])
def test_a_500_names_the_apps_cause_in_one_line(path: str) -> None:
    run = measure(path)
    output = run.stdout + run.stderr
    assert "Traceback" not in output
    assert "FIELDSECRET" not in output
    if path == "/fixed":
        assert run.returncode == 0, output
        assert "the app's log" not in output
        return
    assert run.returncode == 1, output
    (line,) = run.stderr.splitlines()
    assert line.startswith("fanout: error: GET /boom answered 500, expected 200")
    assert line.endswith(
        "(the app's log: ValueError: user_id is an int, the model wants str; token=***)"
    )
