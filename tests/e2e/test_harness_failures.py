"""The harness under failure: whatever goes wrong, one clear line, the child's log tail,
within the startup timeout, and no process of the stack left behind.

Each case runs a real pytest subprocess tagged with a unique environment
variable; afterwards no live process may carry the tag.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import NO_UNUSED_PLUGINS, REPO, processes_tagged

USES_STACK = """
def test_uses_stack(fanout):
    fanout.get("/healthz")
"""


def run_tagged(tmp_path: Path, *args: str, timeout_s: float = 90) -> tuple[int, str, str]:
    """Run pytest in tmp_path; return (exit status, output, tag)."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "FANOUT_TEST_TAG": tag}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *NO_UNUSED_PLUGINS, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return result.returncode, result.stdout + result.stderr, tag


def assert_nothing_left(tag: str) -> None:
    deadline = time.monotonic() + 10
    while processes_tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval
    assert processes_tagged(tag) == {}


def write(tmp_path: Path, ini: str = "", **files: str) -> None:
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nfanout_app_dir = {REPO}\n{ini}")
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)


def test_failing_test_leaves_no_process(tmp_path: Path) -> None:
    write(
        tmp_path,
        test_fails="""
def test_fails(fanout):
    m = fanout.measure("/sync/2", repeat=1, warmup=0)
    fanout.assert_concurrency(m, peak=2)
""",
    )
    status, output, tag = run_tagged(tmp_path)
    assert status == pytest.ExitCode.TESTS_FAILED
    assert "the held probe saw at most 1 (waves [1, 1])" in output
    assert "the calls ran one at a time" in output
    assert "fanout app log (last lines)" in output
    assert_nothing_left(tag)


@pytest.mark.parametrize(
    ("app", "extra", "line"),
    [
        (
            "no_such_module:app",
            {},
            "pytest-fanout: app (no_such_module:app) exited with status 4 before answering: "
            "cannot import app 'no_such_module:app'",
        ),
        (
            "app.main:no_such_attr",
            {},
            "pytest-fanout: app (app.main:no_such_attr) exited with status 4 before answering: "
            "cannot import app 'app.main:no_such_attr': Attribute \"no_such_attr\" not found",
        ),
        (
            "broken:app",
            {
                "broken": """
from contextlib import asynccontextmanager
from fastapi import FastAPI

@asynccontextmanager
async def lifespan(app):
    raise RuntimeError("no database")
    yield

app = FastAPI(lifespan=lifespan)
"""
            },
            "pytest-fanout: app (broken:app) exited with status 3 before answering: "
            "RuntimeError: no database",
        ),
        (
            "hangs:app",
            {
                "hangs": """
import time
from contextlib import asynccontextmanager
from fastapi import FastAPI

@asynccontextmanager
async def lifespan(app):
    time.sleep(600)  # a start-up that never finishes
    yield

app = FastAPI(lifespan=lifespan)
"""
            },
            "pytest-fanout: app (hangs:app) did not answer on http://127.0.0.1:",
        ),
    ],
    ids=["bad-module", "bad-attribute", "raises-at-startup", "hangs-at-startup"],
)
def test_app_that_cannot_start(tmp_path: Path, app: str, extra: dict, line: str) -> None:
    write(
        tmp_path,
        f"fanout_app = {app}\nfanout_startup_timeout = 3\n",
        test_stack=USES_STACK,
        **extra,
    )
    (tmp_path / "pytest.ini").write_text(
        (tmp_path / "pytest.ini")
        .read_text()
        .replace(f"fanout_app_dir = {REPO}", f"fanout_app_dir = {REPO}\npythonpath = {tmp_path}")
    )
    start = time.monotonic()
    status, output, tag = run_tagged(tmp_path)
    elapsed = time.monotonic() - start
    assert status == pytest.ExitCode.TESTS_FAILED
    assert line in output, output[-3000:]
    assert "During handling of the above exception" not in output
    assert elapsed < 30  # startup timeout 3 s, plus interpreter start-ups
    assert_nothing_left(tag)


def test_port_already_in_use(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        write(
            tmp_path,
            test_stack=USES_STACK,
            conftest=f"""
def pytest_fanout_server_setup(server, config):
    if server.name == "app":
        server.port = {port}
""",
        )
        status, output, tag = run_tagged(tmp_path)
    finally:
        busy.close()
    assert status == pytest.ExitCode.TESTS_FAILED
    assert f"pytest-fanout: cannot bind 127.0.0.1:{port}: Address already in use" in output
    assert_nothing_left(tag)


def test_app_killed_mid_test_is_one_line_with_its_log_tail(tmp_path: Path) -> None:
    """kill -9 of the app while a request is in flight: the test fails with one line that
    names the signal and the request, the app's log tail follows, and the next test says
    the app is gone; no transport traceback, no teardown error."""
    write(
        tmp_path,
        test_killed="""
import os
import signal
import threading

def test_killed(fanout):
    killer = threading.Timer(0.3, os.kill, args=(fanout.server.pid, signal.SIGKILL))
    killer.start()
    try:
        fanout.measure("/sync/10", repeat=1, warmup=0)
    finally:
        killer.cancel()

def test_after(fanout):
    fanout.get("/healthz")
""",
    )
    status, output, tag = run_tagged(tmp_path)
    assert status == pytest.ExitCode.TESTS_FAILED
    assert "MeasurementError: the app process died (signal 9) during GET /sync/10" in output
    assert "MeasurementError: the app process died (signal 9) before GET /healthz" in output
    assert "fanout app log (last lines)" in output
    for raw in ("httpcore", "httpx2._transports", "RemoteProtocolError", "ReadError"):
        assert raw not in output, output[-3000:]
    assert "error" not in output.splitlines()[-1].lower()  # "2 failed", no teardown errors
    assert_nothing_left(tag)


def test_stub_killed_mid_session_is_one_line_naming_it(tmp_path: Path) -> None:
    """kill -9 of a stub upstream (issue 32, #11): the next measurement and every later test
    fail with one line naming the upstream and its signal, never a transport traceback."""
    write(
        tmp_path,
        test_stub_killed="""
import os
import signal

def test_killed(fanout):
    stub = fanout.upstream
    os.kill(stub.pid, signal.SIGKILL)
    stub.proc.wait(timeout=10)
    fanout.measure("/async/5", repeat=1, warmup=0)

def test_after(fanout):
    fanout.upstream.stats()
""",
    )
    status, output, tag = run_tagged(tmp_path)
    assert status == pytest.ExitCode.TESTS_FAILED
    # In the measurement: one line naming it and the request; a later call: naming it.
    assert "MeasurementError: upstream 'default' died (signal 9) during GET /async/5" in output
    assert "ServerDiedError: upstream 'default' died (signal 9)" in output, output[-3000:]
    for raw in ("httpcore", "httpx2._transports", "RemoteProtocolError", "ConnectError"):
        assert raw not in output, output[-3000:]
    assert "error" not in output.splitlines()[-1].lower()  # "2 failed", no teardown errors
    assert_nothing_left(tag)


def test_request_timeout_names_the_path_and_the_limit(tmp_path: Path) -> None:
    write(
        tmp_path,
        "fanout_request_timeout = 1\n",
        test_slow="""
import pytest

# 5 calls in a row of 0.8 s: 3 s of them still run after the 1 s timeout, so the next test
# finds them whatever the load (with 3 calls, 1.4 s: a busy runner's teardown and set-up
# between the tests once took longer, and nothing was left to wait for).
@pytest.mark.fanout_upstream(delay_ms=800)
def test_slow(fanout):
    fanout.measure("/sync/5", repeat=1, warmup=0)

def test_next_one_is_clean(fanout):
    m = fanout.measure("/async/3", repeat=1, warmup=0, n=3)
    fanout.assert_concurrency(m, peak=3, requests=3)
""",
    )
    start = time.monotonic()
    status, output, tag = run_tagged(tmp_path, "-p", "no:randomly")
    assert time.monotonic() - start < 60
    assert status == pytest.ExitCode.TESTS_FAILED
    assert (
        "MeasurementError: GET /sync/5 did not answer within 1 s (the request timeout, "
        "--fanout-request-timeout)"
    ) in output
    assert "ReadTimeout" not in output
    # The next test waited for the slow calls still in flight, said so, and measured exactly.
    assert "1 failed, 1 passed" in output
    assert "still running in the app: waited for them before measuring GET /async/3" in output
    assert_nothing_left(tag)


def test_a_named_upstream_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        write(
            tmp_path,
            "fanout_upstreams =\n    stock FANOUT_UPSTREAM_URL\n    pricing PRICING_URL\n",
            test_stack=USES_STACK,
            conftest=f"""
def pytest_fanout_server_setup(server, config):
    if server.name == "upstream-pricing":
        server.port = {port}
""",
        )
        status, output, tag = run_tagged(tmp_path)
    finally:
        busy.close()
    assert status == pytest.ExitCode.TESTS_FAILED
    assert f"pytest-fanout: cannot bind 127.0.0.1:{port}: Address already in use" in output
    assert "Traceback" not in output
    assert_nothing_left(tag)
