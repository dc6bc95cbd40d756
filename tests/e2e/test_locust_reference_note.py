"""The one-line locustfile (`from pytest_fanout.locust import *`) beside a [tool.fanout]
that names the user's own app: the reference users call the reference app's routes, which
that app has not, so every request fails (404) and the run ends on "completed requests ... is
0". Found running the wheel on a public weather service (docs/field.md): the run now says
why in one line at the start; a locustfile with a FanoutUser of its own says nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pytest_fanout.load import EXIT_THRESHOLD, MARKER_ENV, kill_marked

APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict:
    return {"hello": "world"}
"""
PYPROJECT = '[tool.fanout]\napp = "hello:app"\n'
ONE_LINE = "from pytest_fanout.locust import *\n"
OWN_USER = (
    ONE_LINE
    + """

class Hello(FanoutUser):
    @task
    def hello(self):
        self.get("/hello")
"""
)
NOTE = "fanout: note: only the reference users run ("


def run_locust(tmp_path: Path, locustfile: str) -> tuple[int, str]:
    (tmp_path / "hello.py").write_text(APP)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "locustfile.py").write_text(locustfile)
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    args = ["-f", "locustfile.py", "--headless", "-u", "2", "-r", "2", "-t", "2s"]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "locust", *args, "--only-summary"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        left = kill_marked(marker)
    assert not left, f"left behind: {left}"
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("locustfile", "noted"), [(ONE_LINE, True), (OWN_USER, False)], ids=["one-line", "own"]
)
def test_reference_users_on_an_own_app_say_why_they_fail(
    tmp_path: Path, locustfile: str, noted: bool
) -> None:
    code, output = run_locust(tmp_path, locustfile)
    assert "Traceback" not in output, output
    notes = [line for line in output.splitlines() if line.startswith(NOTE)]
    if noted:
        assert code == EXIT_THRESHOLD, output  # every request 404: nothing completed
        (note,) = notes
        assert "(AsyncSemUser, AsyncUser, SyncUser)" in note
        assert "and the app is hello:app: for its own routes, subclass FanoutUser" in note
    else:
        assert code == 0, output
        assert notes == [], output
