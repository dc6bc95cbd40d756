"""pytest: a value given apart from our flag that starts with a dash (`--fanout-rate-limit
-1/s`) gets the option's own one line, the same as with `=`, not argparse's "expected one
argument"; nothing else on the command line changes (a real pytest, in a subprocess)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

#: The inner session's one test: it runs only when the command line was read as given.
ONE_TEST = "def test_one():\n    pass\n"


def error_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stderr.lines if line.strip()]


@pytest.mark.parametrize(
    ("flag", "value", "line"),
    [
        (
            "--fanout-rate-limit",
            "-1/s",
            "ERROR: --fanout-rate-limit: rate_limit='-1/s' must allow at least 1 call"
            " (leave it out for no limit)",
        ),
        ("--fanout-delay-ms", "-5ms", "ERROR: --fanout-delay-ms: '-5ms' is not a number"),
        (
            "--fanout-alpha",
            "-1e-3",
            "ERROR: pytest-fanout gate: alpha '-1e-3' must be between 0 and 0.5 (for example 0.01)",
        ),
    ],
)
def test_a_dash_led_value_apart_gets_the_same_one_line_as_with_equals(
    pytester: pytest.Pytester, flag: str, value: str, line: str
) -> None:
    pytester.makepyfile(ONE_TEST)
    apart = pytester.runpytest("-p", "pytest_fanout", flag, value)
    joined = pytester.runpytest("-p", "pytest_fanout", f"{flag}={value}")
    for result in (apart, joined):
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert error_lines(result) == [line], result.stderr.str()
        assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_flag_without_its_value_and_a_users_own_options_are_as_before(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(ONE_TEST)
    missing = pytester.runpytest("-p", "pytest_fanout", "--fanout-rate-limit")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*error: argument --fanout-rate-limit: expected one argument"])
    # An option, not a value: left alone (argparse names the flag that has none).
    option_after = pytester.runpytest("-p", "pytest_fanout", "--fanout-rate-limit", "-x")
    option_after.stderr.fnmatch_lines(["*argument --fanout-rate-limit: expected one argument"])
    # A user's own flags and dash-led values: exactly pytest's own reading.
    own = pytester.runpytest("-p", "pytest_fanout", "-k", "-x")
    own.stderr.fnmatch_lines(["*error: argument -k: expected one argument"])
    runs = pytester.runpytest("-p", "pytest_fanout", "--fanout-delay-ms", "5", "-x", "-k", "one")
    runs.assert_outcomes(passed=1)
