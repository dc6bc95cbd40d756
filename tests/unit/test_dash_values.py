"""A value that starts with a dash, given apart from its flag (`--fanout-rate-limit -1/s`):
the one helper beside the registry (`spec.join_dash_values`) and pytest's early parse."""

from __future__ import annotations

import argparse

import pytest

from pytest_fanout.spec import (
    MISSING,
    OPTIONS,
    add_options,
    end_early_parse,
    join_dash_values,
    missing_value,
    value_flags,
)

OURS = frozenset({"--fanout-rate-limit", "--fanout-delay-ms", "--fanout-app-env"})


@pytest.mark.parametrize(
    ("args", "joined"),
    [
        (["--fanout-rate-limit", "-1/s"], ["--fanout-rate-limit=-1/s"]),
        (["--fanout-delay-ms", "-5ms", "-x"], ["--fanout-delay-ms=-5ms", "-x"]),
        (["--fanout-delay-ms", "-.5"], ["--fanout-delay-ms=-.5"]),
        (["--fanout-delay-ms", "-5"], ["--fanout-delay-ms=-5"]),  # argparse took it already
        (["--fanout-app-env", "-1=x", "t.py"], ["--fanout-app-env=-1=x", "t.py"]),
    ],
)
def test_our_flag_takes_the_dash_led_value_after_it(args: list[str], joined: list[str]) -> None:
    assert join_dash_values(args, OURS) == joined


@pytest.mark.parametrize(
    "args",
    [
        ["-k", "-x"],  # a user's own options: never touched
        ["--other", "-1/s"],  # not ours
        ["--fanout-rate-limit", "-x"],  # an option, not a value: argparse says so
        ["--fanout-rate-limit", "--fanout-delay-ms", "5"],
        ["--fanout-rate-limit"],  # missing at the end: argparse's "expected one argument"
        ["--fanout-rate-limit=-1/s", "-2"],  # already joined
        ["--", "--fanout-rate-limit", "-1/s"],  # after "--": positionals
        ["-k", "--fanout-rate-limit"],
    ],
)
def test_nothing_else_changes(args: list[str]) -> None:
    assert join_dash_values(args, OURS) == args


def test_without_a_set_every_long_flag_is_ours() -> None:
    """`fanout`'s parser: every option is ours, the registry's and the command's own."""
    assert join_dash_values(["serve", "--jitter-ms", "-5ms", "-q"], None) == [
        "serve",
        "--jitter-ms=-5ms",
        "-q",
    ]


def test_value_flags_are_the_registrys_with_their_old_names_and_no_switch() -> None:
    pytest_flags = value_flags("fanout-", "pytest")
    assert {"--fanout-rate-limit", "--fanout-delay-ms", "--fanout-save", "--fanout-alpha"} <= (
        pytest_flags
    )
    assert "--fanout-app-factory" not in pytest_flags  # a switch takes no value
    assert "--fanout-save-failed" not in pytest_flags
    assert "--fanout-repeat" not in pytest_flags  # `fanout measure`'s only
    locust_flags = value_flags("fanout-", "locust")
    assert {"--fanout-upstream-delay-ms", "--fanout-max-p95-ms"} <= locust_flags
    assert "--fanout-request-timeout" not in locust_flags
    assert {"--timeout", "--fanout-config", "--repeat"} <= value_flags("", "fanout")
    every = {option.flag("fanout-") for option in OPTIONS.values()}
    assert pytest_flags <= every | {"--fanout-upstream-delay-ms"}


class _Strict(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise ValueError(message)


def _pytest_like_parser() -> _Strict:
    """Our pytest flags on a plain parser, as pytest's `addoption` adds them."""
    parser = _Strict(allow_abbrev=False)
    parser.add_argument("file_or_dir", nargs="*")
    add_options(
        parser.add_argument, prefix="fanout-", group="stack", front_end="pytest", typed=False
    )
    return parser


def test_pytest_flags_take_an_optional_value_until_the_arguments_are_joined() -> None:
    """pytest parses once with our flags known before any hook of ours sees the arguments:
    there a dash-led value is left aside (no error); joined, it is the flag's value; after
    `end_early_parse`, a flag without its value is argparse's own error again."""
    end_early_parse()  # those of earlier tests in this process
    parser = _pytest_like_parser()
    args = ["--fanout-rate-limit", "-1/s", "--fanout-app-env", "A=1", "t.py"]
    early, unknown = parser.parse_known_args(args)
    assert early.fanout_rate_limit is MISSING and unknown == ["-1/s"]
    assert early.fanout_app_env == ["A=1"]
    end_early_parse()
    parsed = parser.parse_args(join_dash_values(args, value_flags("fanout-", "pytest")))
    assert parsed.fanout_rate_limit == "-1/s"
    assert parsed.fanout_app_env == ["A=1"]
    assert parsed.file_or_dir == ["t.py"]
    with pytest.raises(ValueError, match="--fanout-rate-limit: expected one argument"):
        parser.parse_args(["--fanout-rate-limit", "-1/s"])  # not joined
    with pytest.raises(ValueError, match="--fanout-delay-ms: expected one argument"):
        parser.parse_args(["--fanout-delay-ms"])
    assert "--fanout-delay-ms MS" in parser.format_help()  # not "[MS]"
    repeated = parser.parse_args(["--fanout-app-env=A=1", "--fanout-app-env", "B=2"])
    assert repeated.fanout_app_env == ["A=1", "B=2"]


def test_a_flag_read_without_its_value_is_named() -> None:
    assert missing_value(MISSING) and missing_value(["A=1", MISSING])
    assert not missing_value(None) and not missing_value("-1/s") and not missing_value([])
