"""Locust and `fanout`: a value given apart from our flag that starts with a dash
(`--fanout-rate-limit -1/s`) gets the option's own one line, the same as with `=`, not
argparse's "expected one argument" (real processes; pytest's: tests/plugin)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_fanout.limits import ExitCode
from pytest_fanout.load import EXIT_USAGE
from tests.helpers import REPO, locust


def _error_line(output: str) -> str:
    """The run's one `error:` line (and there is one only)."""
    lines = [line for line in output.splitlines() if "error:" in line]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--fanout-rate-limit", "-1/s", "rate_limit='-1/s' must allow at least 1 call"),
        ("--fanout-upstream-delay-ms", "-5ms", "'-5ms' is not a number"),  # an old name
        ("--fanout-max-p95-ms", "-5ms", "'-5ms' is not a number"),
    ],
)
def test_locust_a_dash_led_value_apart_gets_the_same_one_line_as_with_equals(
    flag: str, value: str, words: str
) -> None:
    lines = []
    for args in ([flag, value], [f"{flag}={value}"]):
        code, output, _ = locust("-f", "locustfiles/", "--run-time", "2s", *args)
        assert code == EXIT_USAGE, output
        assert "Traceback" not in output
        assert "embedded stack" not in output  # refused before anything starts
        lines.append(_error_line(output))
    assert lines[0] == lines[1]
    assert words in lines[0] and "expected one argument" not in lines[0]


def test_locust_a_flag_without_its_value_keeps_argparses_line() -> None:
    code, output, _ = locust("-f", "locustfiles/", "--run-time", "2s", "--fanout-rate-limit")
    assert code == EXIT_USAGE, output
    assert "argument --fanout-rate-limit: expected one argument" in _error_line(output)


def test_fanout_a_flag_without_its_value_keeps_argparses_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "serve", "--rate-limit"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert result.stderr.strip() == (
        "fanout serve: error: argument --rate-limit: expected one argument"
        " (see: fanout serve --help)"
    )
