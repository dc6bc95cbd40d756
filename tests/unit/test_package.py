"""The package's shape: what importing it does, what is public, how many top-level modules."""

from __future__ import annotations

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


def test_at_most_fourteen_modules_at_the_top_level() -> None:
    # A dozen, plus spec.py (the stack declared once) and exitcodes.py (one set of codes).
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 14, modules
