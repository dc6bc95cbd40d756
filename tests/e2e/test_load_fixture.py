"""The `fanout_load` fixture: Locust against the session's app, in one line of a test."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_fanout.load import (
    LOCUSTFILE_ENV,
    LoadResult,
    LoadRunError,
    default_locustfile,
    run_locust,
)
from pytest_fanout.plugin import session_load_results
from tests.helpers import NO_UNUSED_PLUGINS, REPO


@pytest.mark.slow
def test_async_sustains_3x_the_requests_per_second_of_sync(
    fanout_load, fanout_upstream, pytestconfig
) -> None:
    """Same run, same users split evenly: closed-loop users make requests/s = users / latency.

    At n=10 and 100 ms per call, sync takes ~1 s and async ~0.1 s: ~10x.
    3x leaves room for a noisy 2-core machine.
    """
    fanout_upstream.configure(delay_ms=100, jitter_ms=0)
    result = fanout_load(users=10, run_time_s=6, n=10, user_classes=["SyncUser", "AsyncUser"])

    assert result.exit_code == 0, result.output[-2000:]
    sync, gather = result.endpoint("/sync/10"), result.endpoint("/async/10")
    assert sync.failures == 0 and gather.failures == 0
    assert sync.requests > 0
    assert gather.rps >= 3 * sync.rps, result.table()
    assert gather.p95_ms < sync.p50_ms, result.table()

    # Kept for the gate, and JSON-serialisable with its documented shape.
    assert session_load_results(pytestconfig)[-1] is result
    data = json.loads(json.dumps(result.to_dict()))
    assert data["endpoints"]["GET /async/10"]["requests"] == gather.requests
    assert LoadResult.from_dict(data).to_dict() == data


USER_LOCUSTFILE = """
from pytest_fanout.locust import *


class Checkout(FanoutUser):
    @task
    def checkout(self):
        self.get("/async/4", name="checkout")
"""


def test_fanout_load_runs_a_users_own_locustfile(fanout_load, fanout_upstream, tmp_path) -> None:
    """locustfile= is the user's file (relative paths are fine): only its users run."""
    fanout_upstream.configure(delay_ms=20, jitter_ms=0)
    fanout_upstream.reset()
    (tmp_path / "my_locustfile.py").write_text(USER_LOCUSTFILE)
    told: list[str] = []  # progress= as the terminal gets it (issue 35), here in a list
    result = fanout_load(
        users=2, run_time_s=2, locustfile=tmp_path / "my_locustfile.py", progress=told.append
    )
    assert result.exit_code == 0, result.output[-2000:]
    assert told[0] == f"locust: 2 user(s) for 2 s on {result.host}", told
    assert all(re.fullmatch(r"locust: \d+ s of 2 s", line) for line in told[1:-1]), told
    assert told[-1] == (
        f"locust: done, {result.total.requests} request(s), 0 failed (exit status 0)"
    ), told
    assert [row.key for row in result.endpoints.values()] == ["GET checkout"]
    assert result.endpoint("checkout").failures == 0
    # Four upstream calls per request, each counted by the stub (plus those of the at
    # most 2 requests cut short when the run ended).
    calls = fanout_upstream.stats()["requests"]
    assert 4 * result.total.requests <= calls <= 4 * (result.total.requests + 2)


def test_a_missing_locustfile_is_one_line_and_starts_nothing(tmp_path) -> None:
    with pytest.raises(LoadRunError) as caught:
        run_locust("http://127.0.0.1:9", locustfile=tmp_path / "nope.py", run_time_s=1)
    assert (
        str(caught.value) == f"the locustfile {tmp_path / 'nope.py'} (locustfile=) does not exist"
    )


def test_the_default_locustfile_is_the_shipped_harness(monkeypatch) -> None:
    monkeypatch.delenv(LOCUSTFILE_ENV, raising=False)
    shipped = default_locustfile()
    assert shipped.name == "locustfile.py" and shipped.parent.name == "harness"
    assert "from pytest_fanout.locust import *" in shipped.read_text()
    monkeypatch.setenv(LOCUSTFILE_ENV, "/somewhere/else.py")
    assert str(default_locustfile()) == "/somewhere/else.py"


TERMINAL_TEST = """
def test_load(fanout_load):
    fanout_load(users=1, run_time_s=3, user_classes=["AsyncUser"])
"""


def _on_a_terminal(cwd: Path, *args: str, timeout_s: float = 120) -> tuple[int, str]:
    """pytest with its output on a pseudo-terminal, as a person runs it: (status, output)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist"]
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [*command, *NO_UNUSED_PLUGINS, *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=sub,
        stderr=sub,
    )
    os.close(sub)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:  # bounded: the deadline
            ready, _, _ = select.select([main], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: pytest closed the terminal's other side
                break
            if not data:
                break
            chunks.append(data)
        status = proc.wait(timeout=30)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.parametrize("quiet", [False, True], ids=["terminal", "terminal-q"])
def test_fanout_load_tells_its_progress_on_a_terminal_and_not_with_q(
    tmp_path: Path, quiet: bool
) -> None:
    """A Locust run takes seconds: on a terminal its start, the seconds run and its end show
    as it goes, past pytest's capture (issue 35); -q shows none of it."""
    (tmp_path / "test_load.py").write_text(TERMINAL_TEST)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nfanout_app_dir = {REPO}\n")
    status, out = _on_a_terminal(tmp_path, *(["-q"] if quiet else []), "test_load.py")
    assert status == 0, out
    told = re.findall(r"fanout_load: locust: [^\n]*", out)
    if quiet:
        assert told == [], out
        return
    assert re.fullmatch(
        r"fanout_load: locust: 1 user\(s\) for 3 s on http://127\.0\.0\.1:\d+", told[0]
    )
    assert re.fullmatch(
        r"fanout_load: locust: done, \d+ request\(s\), 0 failed \(exit status 0\)", told[-1]
    ), out
    assert len(told) >= 3, out  # at least one "N s of 3 s" between (every 2 s)
