"""`python -m tests.under_load` ended by SIGTERM (a `timeout`, a CI cancel) stops its
burners and its command: nothing is left spinning on the runner. The command's own
temporary root goes when it passed, and stays, named, when it failed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, wait_until

#: Writes a file into the temporary root the runner gives it, says where, exits with argv[1].
WRITE_IN_ROOT = """
import os, pathlib, sys
root = pathlib.Path(os.environ["PYTEST_DEBUG_TEMPROOT"])
(root / "pytest-of-someone").mkdir()
(root / "pytest-of-someone" / "file").write_text("kept?")
print(root)
sys.exit(int(sys.argv[1]))
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_burners_and_the_command() -> None:
    runner = subprocess.Popen(
        [sys.executable, "-m", "tests.under_load", "--burners", "2", "--", "sleep", "60"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: len(_children(runner.pid)) == 3, 20, "2 burners and the command")
        children = _children(runner.pid)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(20) == 128 + signal.SIGTERM
        wait_until(lambda: not any(_alive(p) for p in children), 10, "the children to end")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


@pytest.mark.parametrize("code", [0, 3])
def test_the_commands_temporary_root_goes_when_it_passed_and_stays_named_when_not(
    code: int,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.under_load", "--burners", "0", "--"]
        + [sys.executable, "-c", WRITE_IN_ROOT, str(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code
    root = Path(done.stdout.strip())
    assert root.name.startswith("pytest-fanout-run-")
    try:
        if code == 0:
            assert not root.exists()
            assert done.stderr == ""
        else:
            assert (root / "pytest-of-someone" / "file").read_text() == "kept?"
            assert done.stderr == (
                f"under load: the command's temporary folders are kept in {root}\n"
            )
    finally:
        if root.name.startswith("pytest-fanout-run-"):
            shutil.rmtree(root, ignore_errors=True)
