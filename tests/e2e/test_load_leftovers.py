"""No orphan and no leftover from a load run, whatever signal ends it.

`fanout_load` inside a pytest that gets SIGINT, SIGTERM or SIGKILL; `fanout
capacity` likewise; Locust workers started apart from a master that is
SIGKILLed. Every process the run started carries a tag in its environment,
so even one re-parented after its parent died is found; its temporary folder
is watched too. Also here: a path that 404s stops `fanout capacity` at once,
and load sizes past their limits are refused in one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pytest_fanout.load import EXIT_USAGE, LoadRunError, run_locust
from tests.helpers import NO_UNUSED_PLUGINS, REPO, free_port, locust, processes_tagged, wait_until

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
IDS = ["SIGINT", "SIGTERM", "SIGKILL"]

LOAD_TEST = """
import os
import pathlib

def test_long_load(fanout_load):
    pathlib.Path(os.environ["FANOUT_TEST_READY"]).write_text("loading")
    fanout_load(users=2, run_time_s=60, user_classes=["AsyncUser"])
"""


def _tagged_env(tmp_path: Path) -> tuple[str, dict[str, str], Path]:
    tag = uuid.uuid4().hex
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "FANOUT_TEST_TAG": tag, "TMPDIR": str(temp), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    return tag, env, temp


def _locust_running(tag: str) -> bool:
    return any("locust" in command for command in processes_tagged(tag).values())


def _kill_tagged(tag: str) -> dict[int, str]:
    left = processes_tagged(tag)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.parametrize("sig", SIGNALS, ids=IDS)
def test_a_signal_to_pytest_during_fanout_load_leaves_nothing(
    tmp_path: Path, sig: signal.Signals
) -> None:
    (tmp_path / "test_load.py").write_text(LOAD_TEST)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nfanout_app_dir = {REPO}\n")
    tag, env, temp = _tagged_env(tmp_path)
    ready = tmp_path / "ready"
    env["FANOUT_TEST_READY"] = str(ready)
    inner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *NO_UNUSED_PLUGINS,
            "-q",
            "test_load.py",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(ready.exists, 60, "the inner test to start its load")
        wait_until(lambda: _locust_running(tag), 30, "Locust to run")
        inner.send_signal(sig)
        output, _ = inner.communicate(timeout=30)
        wait_until(lambda: not processes_tagged(tag), 10, "every tagged process to end")
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        left = _kill_tagged(tag)
    assert not left, f"left behind after {sig.name}: {left}"
    text = output.decode(errors="replace")
    assert "did not finish within" not in text, text[-2000:]
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in text, text[-2000:]
        assert inner.returncode == pytest.ExitCode.INTERRUPTED
    else:
        assert inner.returncode == -sig
    assert not [p.name for p in temp.iterdir() if p.name.startswith("fanout-")]


@pytest.mark.parametrize("sig", SIGNALS, ids=IDS)
def test_a_signal_to_fanout_capacity_leaves_no_process_and_no_folder(
    tmp_path: Path, sig: signal.Signals
) -> None:
    tag, env, temp = _tagged_env(tmp_path)
    command = [sys.executable, "-m", "pytest_fanout.cli", "capacity", "--slo-p95-ms", "400"]
    command += ["--path", "/async/2", "--delay-ms", "20", "--step-s", "30", "--budget-s", "60"]
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: any(p.name.startswith("fanout-load-") for p in temp.iterdir()),
            60,
            "the first step's work folder",
        )
        wait_until(lambda: _locust_running(tag), 30, "Locust to run")
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
        wait_until(lambda: not processes_tagged(tag), 10, "every tagged process to end")
        wait_until(
            lambda: not [p for p in temp.iterdir() if p.name.startswith("fanout-")],
            10,
            "the work folders to be removed",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = _kill_tagged(tag)
    assert not left, f"left behind after {sig.name}: {left}"
    text = output.decode(errors="replace")
    assert "did not finish within" not in text, text[-2000:]
    if sig == signal.SIGINT:
        assert "fanout: interrupted, stopped all processes" in text, text[-2000:]
        assert proc.returncode == 128 + signal.SIGINT
        assert "Traceback" not in text, text[-2000:]
    else:
        assert proc.returncode == -sig


def test_workers_started_apart_leave_within_10s_of_a_sigkilled_master(tmp_path: Path) -> None:
    tag, env, _ = _tagged_env(tmp_path)
    port = str(free_port())
    base = [sys.executable, "-m", "locust", "-f", "locustfiles/"]
    master = [*base, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port]
    master += ["--headless", "--expect-workers", "2", "--users", "2", "--spawn-rate", "2"]
    master += ["--run-time", "120s", "AsyncUser"]
    worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    logs = {name: tmp_path / f"{name}.log" for name in ("master", "w1", "w2")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, cmd in (("master", master), ("w1", worker), ("w2", worker)):
            with open(logs[name], "wb") as log:
                procs[name] = subprocess.Popen(
                    cmd,
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # apart: no shared group, no parent to watch
                )
        # A worker sends its first heartbeat as it connects and the master answers each:
        # once the users are spawned (a second or more later) their timeout clock runs.
        wait_until(
            lambda: "All users spawned" in logs["master"].read_text(), 60, "the users spawned"
        )
        os.kill(procs["master"].pid, signal.SIGKILL)
        procs["master"].wait(timeout=10)
        killed_at = time.monotonic()
        for name in ("w1", "w2"):
            procs[name].wait(timeout=15)
        gone_after = time.monotonic() - killed_at
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # The master's embedded stack follows its dead parent; anything else is a leftover.
        wait_until(lambda: not processes_tagged(tag), 10, "every tagged process to end")
        left = _kill_tagged(tag)
    assert not left, f"left behind: {left}"
    assert gone_after < 10, f"workers took {gone_after:.1f}s to leave"


def test_a_capacity_path_that_404s_stops_at_once(tmp_path: Path) -> None:
    tag, env, _ = _tagged_env(tmp_path)
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "capacity", "--slo-p95-ms", "500"]
        + ["--path", "/nope", "--step-s", "2", "--budget-s", "60"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    left = _kill_tagged(tag)
    assert not left
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("fanout capacity: error: GET /nope at http://127.0.0.1:")
    assert "answers 404 Not Found" in line
    assert time.monotonic() - began < 30  # not its 60 s budget


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(users=10**9), "users=1000000000 is above the limit of 100,000"),
        (dict(run_time_s=10**9), "run_time_s=1000000000 is above the limit of 86,400"),
        (dict(spawn_rate=1e9), "spawn_rate=1000000000.0 is above the limit"),
        (dict(processes=10**6), "processes=1000000 is above the limit of 256"),
        (dict(run_time_s=float("nan")), "run_time_s=nan must be a number > 0"),
    ],
)
def test_load_sizes_past_their_limit_are_one_line(kwargs: dict, words: str) -> None:
    with pytest.raises(LoadRunError) as refused:
        run_locust("http://127.0.0.1:9", **kwargs)
    assert words in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--users", "1000000000"], "--users 1,000,000,000 is above the limit of 100,000"),
        (["--users", "2", "--spawn-rate", "1e9"], "--spawn-rate 1,000,000,000 is above the"),
    ],
)
def test_locusts_own_sizes_past_the_limit_are_one_line(args: list[str], words: str) -> None:
    code, output, _ = locust("-f", "locustfiles/", "--headless", "--run-time", "2s", *args)
    assert code == EXIT_USAGE, output
    assert f"fanout: error: {words}" in output
    assert "Traceback" not in output and "embedded stack: app" not in output
