"""No secret in any artifact of the gate: planted in the app's settings, looked for everywhere.

A FANOUT_* variable, an ini `fanout_app_env` line and a command-line override each carry a
planted secret; the saved JSON (baseline and run), the Markdown report, the terminal output
and `fanout compare`'s output, Markdown and JSON report must hold none of them, while the
settings' NAMES stay and a changed value is still noticed ("settings differ").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference_shapes import SHAPES_CONFTEST

REPO = Path(__file__).resolve().parents[2]
SECRETS = ("hunter2-planted-7f3a", "sk-planted-token-91c2", "rotated-planted-pw-5e1d")

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = f"""
[pytest]
fanout_app_dir = {REPO}
fanout_app_env =
    PAYMENTS_API_KEY={SECRETS[1]}
"""

TEST = """
def test_gather(fanout):
    fanout.measure("/async/5", repeat=5)
"""


def inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=180)


def test_no_artifact_holds_a_planted_secret(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(SHAPES_CONFTEST)
    pytester.makepyfile(test_perf=TEST)
    monkeypatch.setenv("FANOUT_DB_PASSWORD", SECRETS[0])
    base = inner(pytester, "--fanout-save=base.json", "--fanout-report-md=base.md")
    assert base.ret == 0, base.stdout.str()
    # The password rotates: the gate must still say the setting changed, by name only.
    monkeypatch.setenv("FANOUT_DB_PASSWORD", SECRETS[2])
    head = inner(
        pytester,
        "--fanout-compare=base.json",
        "--fanout-save=head.json",
        "--fanout-report-md=head.md",
        "--fanout-allow-ungated",
    )
    terminal = head.stdout.str() + head.stderr.str() + base.stdout.str() + base.stderr.str()
    assert "settings differ (values not shown): changed FANOUT_DB_PASSWORD" in terminal
    compare = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_fanout.cli",
            "compare",
            "base.json",
            "head.json",
            "--report-md",
            "cmp.md",
            "--report-json",
            "cmp.json",
            "--allow-ungated",
        ],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert compare.returncode in (0, 1), compare.stderr
    assert "FANOUT_DB_PASSWORD" in compare.stdout  # the name stays
    artifacts = {
        "terminal": terminal,
        "fanout compare": compare.stdout + compare.stderr,
        **{
            name: (pytester.path / name).read_text()
            for name in ("base.json", "base.md", "head.json", "head.md", "cmp.md", "cmp.json")
        },
    }
    for name, text in artifacts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked into {name}"
    assert "PAYMENTS_API_KEY" in artifacts["head.json"]  # its name, with a fingerprint


def test_a_credential_on_the_command_line_is_redacted_in_the_saved_run(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(f"[pytest]\nfanout_app_dir = {REPO}\n")
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = inner(pytester, "--fanout-save=run.json", "-o", f"API_TOKEN={SECRETS[1]}")
    assert result.ret == 0, result.stdout.str()
    saved = (pytester.path / "run.json").read_text()
    assert SECRETS[1] not in saved and "API_TOKEN=***" in saved
