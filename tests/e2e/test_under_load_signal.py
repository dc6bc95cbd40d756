"""`python -m tests.under_load` ended by SIGTERM (a `timeout`, a CI cancel) stops its
burners and its command: nothing is left spinning on the runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.helpers import REPO, wait_until


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
