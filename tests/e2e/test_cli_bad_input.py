"""Bad input to the `fanout` command: one clear line on stderr, a non-zero exit, no traceback.

Every case runs the real CLI as a subprocess (`python -m pytest_fanout.cli`),
from the repository root so that the reference app imports. The table in
docs/bad-input.md lists the same cases and the line each one prints.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_fanout.limits import ExitCode

REPO = Path(__file__).resolve().parents[2]
#: Generous: a case that starts the stack (bad --app) spawns two Python processes.
RUN_TIMEOUT_S = 60


def fanout(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `fanout ARGS` to completion (bounded), capturing both streams."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_clear_line(
    result: subprocess.CompletedProcess[str], expected_status: int, *fragments: str
) -> str:
    """The failure contract: status, exactly one stderr line naming the problem, no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == expected_status, output
    lines = error_lines(result)
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith("fanout"), line
    assert "error:" in line, line
    for fragment in fragments:
        assert fragment in line, line
    return line


# (arguments, the words the one line must contain)
USAGE_ERRORS: list[tuple[list[str], list[str]]] = [
    ([], ["required: COMMAND"]),
    (["bogus"], ["invalid choice: 'bogus'"]),
    (["upstream", "--nope"], ["unrecognized arguments: --nope"]),
    (["upstream", "--delay-ms", "-1"], ["--delay-ms", "-1 must be a finite number >= 0"]),
    (["upstream", "--delay-ms", "abc"], ["--delay-ms", "'abc' is not a number"]),
    (["upstream", "--delay-ms", "inf"], ["--delay-ms", "inf must be a finite number >= 0"]),
    (["upstream", "--delay-ms", "nan"], ["--delay-ms", "nan must be a finite number >= 0"]),
    (["upstream", "--jitter-ms", "-5"], ["--jitter-ms", "must be a finite number >= 0"]),
    (["upstream", "--error-rate", "2"], ["--error-rate", "2 must be between 0 and 1"]),
    (["upstream", "--error-rate", "-0.5"], ["--error-rate", "must be a finite number >= 0"]),
    (["upstream", "--drop-rate", "1.5"], ["--drop-rate", "1.5 must be between 0 and 1"]),
    (["upstream", "--error-status", "999"], ["--error-status", "999 is not an HTTP status"]),
    (["upstream", "--error-status", "five"], ["--error-status", "'five' is not an HTTP status"]),
    (["upstream", "--max-inflight", "-1"], ["--max-inflight", "-1 must be >= 0"]),
    (["upstream", "--port", "99999"], ["--port", "99999 is not a port number (0-65535)"]),
    (["upstream", "--port", "-1"], ["--port", "-1 is not a port number"]),
    (["upstream", "--port", "http"], ["--port", "'http' is not a port number"]),
    (["serve", "--app-port", "70000"], ["--app-port", "70000 is not a port number"]),
    (["serve", "--upstream-port", "x"], ["--upstream-port", "'x' is not a port number"]),
    (["serve", "--startup-timeout", "0"], ["--startup-timeout", "0 must be > 0"]),
    (["serve", "--app", "no colon"], ["--app", "'no colon' is not an import string"]),
    (["patterns", "--n", "0"], ["--n", "0 must be at least 1"]),
    (["patterns", "--n", "-3"], ["--n", "-3 must be at least 1"]),
    (["patterns", "--n", "1.5"], ["--n", "'1.5' is not an integer"]),
    (["patterns", "--max-concurrent", "0"], ["--max-concurrent", "0 must be at least 1"]),
    (["patterns", "--repeat", "0"], ["--repeat", "0 must be at least 1"]),
    (["patterns", "--delay-ms", "-1"], ["--delay-ms", "must be a finite number >= 0"]),
    (["patterns", "--app", "app.main"], ["--app", "'app.main' is not an import string"]),
    (["patterns", "--app", ":app"], ["--app", "':app' is not an import string"]),
    (["measure"], ["required: path"]),
    (["measure", "/x", "--upstream", "inventory"], ["--upstream", "is not NAME=ENVVAR"]),
    (["measure", "/x", "--upstream", "a b=C"], ["--upstream", "is not NAME=ENVVAR"]),
    (["measure", "/x", "--method", "BREW"], ["--method", "invalid choice: 'BREW'"]),
    (["measure", "/x", "--repeat", "0"], ["--repeat", "0 must be at least 1"]),
    (["measure", "/x", "--concurrency", "0"], ["--concurrency", "0 must be at least 1"]),
    (["upstream", "--token", "a\nb"], ["--token", "is not a token"]),
    (
        ["measure", "/x", "--upstream", "a=A_URL", "--upstream", "b=A_URL"],
        ["A_URL is given to two"],
    ),
    (
        ["measure", "/x", "--app-factory", "--route", "GET"],
        ["--route", "is not '[UPSTREAM] METHOD"],
    ),
    (["measure", "/x", "--route", "nope GET /x"], ["--route: no upstream named 'nope'"]),
    (["measure", "/x", "--config", "missing.toml"], ["missing.toml: no such file"]),
    (["measure", "/x", "--timeout", "nan"], ["--timeout", "must be a finite number >= 0"]),
    (["upstream", "--delay-ms", "1e12"], ["--delay-ms", "1e12 is above the limit of 3,600,000 ms"]),
    (["upstream", "--max-inflight", "1e9"], ["--max-inflight", "'1e9' is not an integer"]),
    (["upstream", "--max-inflight", "5000000"], ["--max-inflight", "above the limit of 1,000,000"]),
    (["patterns", "--n", "1000000"], ["--n", "1000000 is above the limit of 10,000"]),
    (["measure", "/x", "--repeat", "100000"], ["--repeat", "above the limit of 10,000"]),
    (["measure", "/x", "--timeout", "1e9"], ["--timeout", "1e9 is above the limit of 86,400 s"]),
    (["upstream", "--rate-limit", "fast"], ["--rate-limit", "'fast' is not a rate limit"]),
    (["serve", "--rate-limit", "0/s"], ["--rate-limit", "'0/s' must allow at least 1 call"]),
    # A value that starts with a dash: argparse took "-1/s" for an unknown option and said
    # "--rate-limit: expected one argument" of a flag that was given one.
    (["serve", "--rate-limit", "-1/s"], ["--rate-limit", "'-1/s' must allow at least 1 call"]),
    (["measure", "/x", "--delay-ms", "-5ms"], ["--delay-ms", "-5ms"]),
    (["measure", "/x", "--burst", "5"], ["burst=5 needs a rate_limit"]),
    (["upstream", "--burst", "5"], ["burst=5 needs a rate_limit"]),
]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["measure", "x"], ["the path 'x' must start with /"]),
        (["measure", "/x", "--json", "{nope"], ["--json is not valid JSON"]),
        (["measure", "/x", "--json", '{"a": NaN}'], ["--json: NaN is not valid JSON"]),
        (["measure", "/x", "--json", "[Infinity]"], ["--json: Infinity is not valid JSON"]),
    ],
)
def test_measure_refuses_a_bad_path_or_body_before_starting_anything(
    args: list[str], fragments: list[str]
) -> None:
    assert_one_clear_line(fanout(*args), ExitCode.USAGE, *fragments)


@pytest.mark.parametrize(
    ("args", "fragments"), USAGE_ERRORS, ids=[" ".join(a) or "(none)" for a, _ in USAGE_ERRORS]
)
def test_usage_error_is_one_line_and_status_2(args: list[str], fragments: list[str]) -> None:
    line = assert_one_clear_line(fanout(*args), 2, *fragments)
    assert line.endswith("--help)"), line  # says where to look next


@pytest.mark.parametrize(
    ("command", "app", "reason"),
    [
        ("serve", "nope_missing_module:app", 'Could not import module "nope_missing_module"'),
        ("serve", "app.main:no_such_attribute", 'Attribute "no_such_attribute" not found'),
        ("patterns", "nope_missing_module:app", 'Could not import module "nope_missing_module"'),
        ("patterns", "app.main:no_such_attribute", 'Attribute "no_such_attribute" not found'),
    ],
)
def test_app_that_does_not_import_is_one_line(command: str, app: str, reason: str) -> None:
    args = [command, "--app", app]
    if command == "serve":
        args += ["--app-port", "0", "--upstream-port", "0"]
    else:
        args += ["--repeat", "1", "--delay-ms", "0", "--no-blocking"]
    result = fanout(*args)
    assert_one_clear_line(result, ExitCode.TARGET_UNUSABLE, f"app ({app})", reason)
    assert result.stdout == ""  # `patterns` prints no header for a table it cannot make


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other socket is listening on for the whole test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "args",
    [
        ["upstream", "--port", "{port}"],
        ["serve", "--app-port", "{port}", "--upstream-port", "0"],
        ["serve", "--app-port", "0", "--upstream-port", "{port}"],
    ],
    ids=["upstream", "serve-app-port", "serve-upstream-port"],
)
def test_port_already_in_use_is_one_line(busy_port: int, args: list[str]) -> None:
    result = fanout(*(a.format(port=busy_port) for a in args))
    assert_one_clear_line(
        result,
        ExitCode.TARGET_UNUSABLE,
        f"cannot bind 127.0.0.1:{busy_port}",
        "Address already in use",
    )


def test_host_that_does_not_resolve_is_one_line() -> None:
    result = fanout("upstream", "--host", "nosuchhost.invalid", "--port", "0")
    assert_one_clear_line(result, ExitCode.TARGET_UNUSABLE, "cannot bind nosuchhost.invalid:0")


def test_n_over_the_apps_cap_is_one_line_not_a_traceback() -> None:
    # The reference app caps n at FANOUT_MAX_N (1000 by default): its 422 becomes one line.
    result = fanout("patterns", "--n", "5000", "--repeat", "1", "--delay-ms", "0", "--no-blocking")
    assert_one_clear_line(result, 1, "answered 422", "less than or equal to 1000")
