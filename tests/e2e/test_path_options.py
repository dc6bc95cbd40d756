"""Issue 32 #16: a path option of the pytest front end in the space form.

pytest picks the rootdir and its config file from the arguments that name
paths before a plugin's options are known: `--fanout-save /elsewhere/b.json`
made it take `/elsewhere/b.json` for a test path, move the rootdir, skip the
project's pyproject.toml and run the reference app instead of the declared
one. `--help` shows the `=` form; the space form is refused in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_fanout.gate.plugin import path_flags, spaced_path_option
from tests.helpers import NO_UNUSED_PLUGINS

APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/who")
async def who():
    return {"app": "declared"}
"""

TEST = """
def test_declared_app(fanout):
    assert fanout.get("/who").json() == {"app": "declared"}
"""


def _project(tmp_path: Path) -> tuple[Path, Path]:
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "pyproject.toml").write_text('[tool.fanout]\napp = "svc:app"\n')
    (project / "svc.py").write_text(APP)
    (project / "test_who.py").write_text(TEST)
    (outside / "base.json").write_text("{}")  # an earlier baseline, outside the project
    return project, outside / "base.json"


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            *NO_UNUSED_PLUGINS,
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("flag", ["--fanout-save", "--fanout-compare", "--fanout-config"])
def test_the_space_form_of_a_path_option_is_refused_in_one_line(tmp_path: Path, flag: str) -> None:
    project, outside = _project(tmp_path)
    result = _pytest(project, flag, str(outside))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        f"ERROR: {flag} {outside}: write {flag}={outside} (given apart, pytest takes"
        f" {outside} for a test path before it knows the option, and picks the rootdir and"
        " the config file from it)"
    ], lines
    assert outside.read_text() == "{}"  # the baseline untouched


def test_the_equals_form_reads_the_project_and_runs_the_declared_app(tmp_path: Path) -> None:
    project, outside = _project(tmp_path)
    result = _pytest(project, f"--fanout-save={outside}", "--fanout-save-failed")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_every_path_option_is_known_and_help_shows_the_equals_form(
    pytester: pytest.Pytester,
) -> None:
    flags = path_flags()
    assert {"--fanout-save", "--fanout-compare", "--fanout-report-md", "--fanout-config"} <= set(
        flags
    )
    assert spaced_path_option(["--fanout-save=x.json", "-k", "save"]) is None
    assert spaced_path_option(["--", "--fanout-save", "x"]) is None
    help_text = pytester.runpytest("--help").stdout.str()
    for flag, metavar in flags.items():
        assert f"{flag}={metavar}" in help_text
