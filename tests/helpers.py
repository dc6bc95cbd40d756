"""Shared test helpers: the repository root, a bounded poll, and a scan for leftover processes.

Imported by the tests (`from tests.helpers import ...`), never through conftest.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_fanout.load import MARKER_ENV, kill_marked
from pytest_fanout.servers.proctree import (
    command_line,
    descendants_of,
    pid_alive,
    processes_with_env,
)

if TYPE_CHECKING:
    import httpx2

    from pytest_fanout.measurement import Measurement, Request
    from pytest_fanout.servers.stack import Stack

__all__ = [
    "NO_UNUSED_PLUGINS",
    "REPO",
    "descendants_of",
    "free_port",
    "locust",
    "locust_master_and_workers",
    "pid_alive",
    "processes_tagged",
    "wait_until",
]

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


def free_port() -> int:
    """A free loopback port for a process that binds its own (Locust's master)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def locust_master_and_workers(
    tmp_path: Path, master_args: Sequence[str], workers: int = 2, timeout: float = 90
) -> tuple[dict[str, int], dict[str, str], str]:
    """Run `locust -f locustfiles/` as a master on loopback plus `workers` workers, marked,
    each logging to tmp_path/<name>.log; return (exit codes, outputs, marker) after checking
    that nothing the run started is left behind."""
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    port = str(free_port())
    base = [sys.executable, "-m", "locust", "-f", "locustfiles/"]
    master = [*base, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port]
    master += ["--expect-workers", str(workers), "--expect-workers-max-wait", "30"]
    worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    commands = {"master": [*master, *master_args]}
    commands.update({f"w{i}": worker for i in range(1, workers + 1)})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with open(tmp_path / f"{name}.log", "wb") as log:  # the child keeps its own copy
                procs[name] = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        codes = {name: proc.wait(timeout=timeout) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        left = kill_marked(marker)
    out = {name: (tmp_path / f"{name}.log").read_text() for name in commands}
    assert not left, f"left behind: {left}"
    return codes, out, marker


#: Installed pytest plugins (by entry-point name) that no inner pytest session of the suite
#: uses: they cost ~2 s of CPU per session (faker's is assertion-rewritten module by module
#: on every start), and the suite starts ~100 sessions. Locust's stays (a test checks that
#: ours coexists with it).
UNUSED_PLUGINS = ("faker", "schemathesis", "hypothesispytest")
#: The options that block them in a session the suite starts.
NO_UNUSED_PLUGINS = tuple(arg for name in UNUSED_PLUGINS for arg in ("-p", f"no:{name}"))


def run_example(ini: str, test_file: str, *extra: str, timeout: float = 180) -> str:
    """One example of tests/examples as its own pytest session with its own ini, as its
    repository would run it; asserts it passed and returns the output."""
    examples = REPO / "tests" / "examples"
    env = {**os.environ}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(examples / ini),
            "-p",
            "no:cacheprovider",
            *NO_UNUSED_PLUGINS,
            *extra,
            str(examples / test_file),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def measure_stack(
    stack: Stack,
    client: httpx2.Client,
    request: Request | str,
    *,
    repeat: int = 2,
    warmup: int = 1,
    **options: Any,
) -> Measurement:
    """`measure` of one request (or a GET path) against a running `Stack`: its app, probe and
    every upstream; 2 samples after a warm-up, as the e2e tests take them."""
    from pytest_fanout.measure import measure
    from pytest_fanout.measurement import Request

    assert stack.app is not None
    if isinstance(request, str):
        request = Request(request)
    return measure(
        client,
        stack.app.url,
        request,
        upstreams=stack.upstreams,
        app=stack.app,
        repeat=repeat,
        warmup=warmup,
        **options,
    )
