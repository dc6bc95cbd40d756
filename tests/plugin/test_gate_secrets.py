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


#: Issue 32 item 3: the forms main kept in clear in `context.argv`.
ARGV_PLANTED = {
    "--fanout-app-env=STRIPE_KEY=sk_live_planted0a1b": "sk_live_planted0a1b",
    "--fanout-app-env=DB_PASS=planted-db-2c3d": "planted-db-2c3d",
    "--fanout-app-env=HOOK=https://hooks.example/x?sig=planted-sig-4e5f": "planted-sig-4e5f",
    "--fanout-app-env=MAPS=https://maps.example/?key=planted-key-6a7b": "planted-key-6a7b",
}


def test_secrets_in_every_argv_form_are_masked_in_the_saved_run(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(f"[pytest]\nfanout_app_dir = {REPO}\n")
    pytester.makeconftest(
        "def pytest_addoption(parser):\n    parser.addoption('--api-key', default=None)\n"
    )
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    args = [*ARGV_PLANTED, "--api-key", "planted-next-8c9d", "-o", "pass=planted-pass-0e1f"]
    result = inner(pytester, "--fanout-save=run.json", *args)
    assert result.ret == 0, result.stdout.str()
    saved = (pytester.path / "run.json").read_text()
    for secret in [*ARGV_PLANTED.values(), "planted-next-8c9d", "planted-pass-0e1f"]:
        assert secret not in saved, secret
    assert "STRIPE_KEY=***" in saved and "--api-key" in saved  # the names stay


def test_a_failed_session_keeps_the_baseline_unless_asked(pytester: pytest.Pytester) -> None:
    """Issue 32: a session whose tests failed does not replace the baseline by default."""
    pytester.makeini(f"[pytest]\nfanout_app_dir = {REPO}\n")
    pytester.makepyfile(test_fails="def test_fails():\n    assert False\n")
    baseline = pytester.path / "base.json"
    baseline.write_text("kept\n")
    result = inner(pytester, "--fanout-save=base.json")
    assert result.ret == 1
    assert baseline.read_text() == "kept\n"
    result.stdout.fnmatch_lines(["*fanout gate: not saved: 1 test(s) failed*--fanout-save-failed*"])
    forced = inner(pytester, "--fanout-save=base.json", "--fanout-save-failed")
    assert forced.ret == 1
    assert '"schema"' in baseline.read_text()
