"""No orphans: a pytest session stopped in the middle of a test leaves no stack process.

A real pytest subprocess runs a test that holds the stack busy; once the test
signals (through a file) that it is running, the outer test records the
stack's processes, stops pytest with SIGINT, SIGTERM or SIGKILL, and then
checks that every one of them is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import NO_UNUSED_PLUGINS, REPO, descendants_of, pid_alive, wait_until

HOLDING_TEST = """
import os
import pathlib

def test_hold(fanout):
    fanout.get("/async/2")
    pathlib.Path(os.environ["FANOUT_TEST_READY"]).write_text("running")
    for _ in range(600):  # bounded: about 60 s at 100 ms each, far past the signal
        fanout.get("/sync/1")
"""


THREE_UPSTREAMS = """
fanout_upstreams =
    first  FANOUT_UPSTREAM_URL
    second SECOND_URL
    third  THIRD_URL
"""


@pytest.mark.parametrize(
    ("sig", "upstreams"),
    [
        (signal.SIGINT, 1),
        (signal.SIGTERM, 1),
        (signal.SIGKILL, 1),
        (signal.SIGTERM, 3),
        (signal.SIGKILL, 3),
    ],
    ids=["SIGINT", "SIGTERM", "SIGKILL", "SIGTERM-3-upstreams", "SIGKILL-3-upstreams"],
)
def test_stopping_pytest_mid_test_leaves_no_process(
    tmp_path: Path, sig: signal.Signals, upstreams: int
) -> None:
    (tmp_path / "test_hold.py").write_text(HOLDING_TEST)
    extra = THREE_UPSTREAMS if upstreams == 3 else ""
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nfanout_app_dir = {REPO}\n{extra}")
    ready = tmp_path / "ready"
    temp = tmp_path / "tmp"  # the inner run's temporary directory: nothing may be left in it
    temp.mkdir()
    env = {**os.environ, "FANOUT_TEST_READY": str(ready), "TMPDIR": str(temp)}
    env.pop("PYTEST_ADDOPTS", None)
    inner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *NO_UNUSED_PLUGINS,
            "-q",
            "test_hold.py",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(ready.exists, 60, "the inner test to start")
        stack = descendants_of(inner.pid)
        assert len(stack) >= upstreams + 1, f"expected the upstreams and the app, saw {stack}"
        inner.send_signal(sig)
        output, _ = inner.communicate(timeout=30)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    wait_until(lambda: not any(pid_alive(p) for p in stack), 15, f"{stack} to end")
    left = [p.name for p in temp.iterdir() if p.name.startswith("fanout-")]
    assert not left, f"log files left after {sig.name}: {left}"
    if sig == signal.SIGINT:
        assert b"KeyboardInterrupt" in output, output.decode()[-2000:]
        assert inner.returncode == pytest.ExitCode.INTERRUPTED
    else:
        assert inner.returncode == -sig
