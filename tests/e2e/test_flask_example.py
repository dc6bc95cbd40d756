"""The Flask example (tests/examples/test_flask_service.py) runs as its own session, with its
own ini, exactly as the Flask shop's repository would run it: every test passes."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

EXAMPLES = REPO / "tests" / "examples"


def test_flask_example_passes_with_its_own_ini() -> None:
    env = {**os.environ}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(EXAMPLES / "pytest-flask.ini"),
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "test_flask_service.py"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "3 passed" in output
    assert "sequential (inventory): peak 1 of 10" in output  # the summary's finding
