"""Shared test helpers: the repository root, a bounded poll, and a scan for leftover processes.

Imported by the tests (`from tests.helpers import ...`), never through conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pytest_fanout.load import MARKER_ENV, kill_marked
from pytest_fanout.servers.proctree import (
    command_line,
    descendants_of,
    pid_alive,
    processes_with_env,
)

__all__ = ["REPO", "descendants_of", "locust", "pid_alive", "processes_tagged", "wait_until"]

REPO = Path(__file__).resolve().parent.parent


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `check` until it is true; fail after `timeout_s` (a bounded loop, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(0.02)  # poll interval


def processes_tagged(tag: str) -> dict[int, str]:
    """Live processes whose environment holds FANOUT_TEST_TAG=<tag>: every process a
    tagged run started, even one re-parented after its parent died."""
    return {pid: command_line(pid) for pid in processes_with_env("FANOUT_TEST_TAG", tag)}


def locust(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `python -m locust ARGS` in the repo root, marked; return (exit status, output,
    marker), after checking that nothing the run started is left behind."""
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "locust", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        left = kill_marked(marker)
    assert not left, f"processes left behind by locust {args}: {left}"
    return proc.returncode, proc.stdout + proc.stderr, marker
