"""The package's shape: what importing it does, what is public, how many top-level modules."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest_fanout

PACKAGE = Path(pytest_fanout.__file__).parent


def test_importing_the_package_installs_no_signal_handler_and_starts_nothing() -> None:
    code = (
        "import atexit, signal, threading\n"
        "before = signal.getsignal(signal.SIGTERM)\n"
        "import pytest_fanout, pytest_fanout.plugin, pytest_fanout.gate, pytest_fanout.load\n"
        "assert signal.getsignal(signal.SIGTERM) is before, 'SIGTERM handler installed'\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_every_public_name_resolves() -> None:
    for module in (pytest_fanout, pytest_fanout.gate, pytest_fanout.load):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_the_public_api_is_at_most_thirty_names_listed_once() -> None:
    # The test-writing API: what a user's test or conftest names; machinery stays in its
    # subpackage (pytest_fanout.servers). Assertions are the fixture's methods
    # (fanout.assert_within_limits), importable from pytest_fanout.assertions.
    assert len(pytest_fanout.__all__) <= 30, pytest_fanout.__all__
    assert len(set(pytest_fanout.__all__)) == len(pytest_fanout.__all__)
    assert set(pytest_fanout.__all__) == {*pytest_fanout._PUBLIC, "__version__"}
    assertions = importlib.import_module("pytest_fanout.assertions")
    for name in ("assert_within_limits", "assert_backs_off", "assert_no_orphans"):
        assert getattr(assertions, name) is getattr(pytest_fanout.Fanout, name)
    servers = importlib.import_module("pytest_fanout.servers")
    machinery = ("AppServer", "ServerProcess", "ServerStartError", "Stack", "StubUpstreamServer")
    for name in machinery:
        assert name not in pytest_fanout.__all__
        assert getattr(servers, name).__name__ == name  # still importable from its subpackage


def test_the_type_checking_imports_agree_with_the_lazy_map() -> None:
    # Type checkers read the `if TYPE_CHECKING:` imports, the package reads _PUBLIC: the
    # same names from the same modules, or an editor and the running code disagree.
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    [block] = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    ]
    imported = {
        alias.asname or alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == pytest_fanout._PUBLIC
    for name, module in pytest_fanout._PUBLIC.items():
        assert getattr(pytest_fanout, name) is getattr(importlib.import_module(module), name)


def test_at_most_twelve_modules_at_the_top_level() -> None:
    # __init__ (the public API), the ground floor (limits), the declaration (spec), the
    # artifacts, the data (measurement), measure, diagnosis, assertions, fixture, plugin,
    # hookspecs and locust; everything else lives in a subpackage (issue 30).
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 12, modules


def test_the_wheel_lists_every_subpackage() -> None:
    """pyproject.toml names the packages the wheel carries: a new subpackage left out installs
    a `fanout` script that cannot import (seen: pytest_fanout.cli)."""
    import tomllib

    listed = set(
        tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {
        "pytest_fanout." + ".".join(init.parent.relative_to(PACKAGE).parts)
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE
    }
    assert found <= listed, sorted(found - listed)
