"""One registry of options (`pytest_fanout.spec.OPTIONS`): one help text wherever an option
is taken (pytest, `fanout`, Locust), and a `fanout --help` that loads nothing heavy."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import pytest

from pytest_fanout import cli, plugin
from pytest_fanout.gate import plugin as gate_plugin
from pytest_fanout.spec import GROUPS, OPTIONS


class _Recorder:
    """Stands in for pytest's Parser and its option group: records what is added."""

    def __init__(self) -> None:
        self.options: dict[str, tuple[list[str], dict[str, Any]]] = {}
        self.inis: dict[str, tuple[str, dict[str, Any]]] = {}

    def getgroup(self, *_args: Any, **_kwargs: Any) -> _Recorder:
        return self

    def addoption(self, *names: str, **kwargs: Any) -> None:
        self.options[kwargs["dest"]] = (list(names), kwargs)

    def addini(self, name: str, help_text: str, **kwargs: Any) -> None:
        self.inis[name] = (help_text, kwargs)


def _pytest_options() -> _Recorder:
    recorder = _Recorder()
    plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    gate_plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    return recorder


def _fanout_actions() -> dict[str, list[argparse.Action]]:
    """dest -> its actions in every `fanout` subcommand."""
    parser = cli.build_parser()
    found: dict[str, list[argparse.Action]] = {}
    for action in parser._subparsers._group_actions:  # noqa: SLF001 (argparse has no API)
        for sub in action.choices.values():
            for sub_action in sub._actions:  # noqa: SLF001
                found.setdefault(sub_action.dest, []).append(sub_action)
    return found


LOCUST_OPTIONS = """
import json
from locust.argument_parser import get_parser
import pytest_fanout.locust  # registers its options, the open model's and abort's
import pytest_fanout.load.capacity_locustfile  # and the capacity step's
parser = get_parser(default_config_files=[])
print(json.dumps({
    a.dest: [a.option_strings, a.help, a.default]
    for a in parser._actions if a.dest.startswith("fanout")
}))
"""


@pytest.fixture(scope="module")
def locust_options() -> dict[str, list[Any]]:
    result = subprocess.run(
        [sys.executable, "-c", LOCUST_OPTIONS], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_option_has_one_help_text_on_every_front_end(
    locust_options: dict[str, list[Any]],
) -> None:
    pytest_side = _pytest_options()
    fanout_side = _fanout_actions()
    for key, option in OPTIONS.items():
        assert option.group in GROUPS, key
        if "pytest" in option.front_ends:
            names, kwargs = pytest_side.options[option.dest]
            assert option.flag("fanout-") in names, key
            assert kwargs["help"] == option.help_text(kwargs["default"]), key
            if option.ini_name:
                assert pytest_side.inis[option.ini_name][0].endswith(option.help_text()), key
        if "fanout" in option.front_ends:
            actions = fanout_side[option.dest]
            for action in actions:
                assert option.flag("") in action.option_strings, key
                assert action.help == option.help_text(action.default), key
        if "locust" in option.front_ends:
            names, help_text, default = locust_options[option.dest]
            assert option.flag("fanout-") in names, key
            assert help_text == option.help_text(default), key
    # And nothing the front ends take under the registry's prefix is declared elsewhere.
    dests = {option.dest for option in OPTIONS.values()}
    assert set(locust_options) <= dests
    assert {d for d in pytest_side.options if d.startswith("fanout")} <= dests


def test_the_same_help_whatever_the_front_end() -> None:
    """One declaration: the texts differ at most by a front end's own default."""
    option = OPTIONS["n"]
    assert option.help_text() != option.help_text(20)
    assert option.help_text(20).replace("20", "10") == option.help_text()
    assert "%(default)s" not in option.help_text()


def test_the_gate_options_read_their_ini_through_the_registry() -> None:
    inis = _pytest_options().inis
    assert inis["fanout_allow_ungated"][1]["type"] == "bool"
    assert {"fanout_fail_on", "fanout_alpha", "fanout_ab"} <= set(inis)
    assert "fanout_save" not in inis and "fanout_compare" not in inis


HEAVY = ("locust", "matplotlib", "pytest_fanout.gate", "httpx2", "uvicorn", "gevent")

IMPORTS_OF = """
import json, sys
from pytest_fanout.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"]])
def test_fanout_help_imports_no_heavy_module(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF, *argv], capture_output=True, text=True, timeout=60
    )
    modules = json.loads(result.stderr.strip().splitlines()[-1])
    assert "usage: fanout" in result.stdout
    heavy = [m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert heavy == []
