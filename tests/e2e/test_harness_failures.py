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

from tests.helpers import REPO, processes_tagged

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
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
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
    write(tmp_path, test_fails="""
def test_fails(fanout):
    m = fanout.measure("/sync/2", repeat=1, warmup=0)
    fanout.assert_concurrency(m, peak=2)
""")
    status, output, tag = run_tagged(tmp_path)
    assert status == pytest.ExitCode.TESTS_FAILED
    assert "saw 1: the calls ran one at a time" in output
    assert "fanout app log (last lines)" in output
    assert_nothing_left(tag)


@pytest.mark.parametrize(
    ("app", "extra", "line"),
    [
        ("no_such_module:app", {},
         "pytest-fanout: app (no_such_module:app) exited with status 4 before answering: "
         "cannot import app 'no_such_module:app'"),
        ("app.main:no_such_attr", {},
         "pytest-fanout: app (app.main:no_such_attr) exited with status 4 before answering: "
         "cannot import app 'app.main:no_such_attr': Attribute \"no_such_attr\" not found"),
        ("broken:app", {"broken": """
from contextlib import asynccontextmanager
from fastapi import FastAPI

@asynccontextmanager
async def lifespan(app):
    raise RuntimeError("no database")
    yield

app = FastAPI(lifespan=lifespan)
"""}, "pytest-fanout: app (broken:app) exited with status 3 before answering: "
      "RuntimeError: no database"),
        ("hangs:app", {"hangs": """
import time
from contextlib import asynccontextmanager
from fastapi import FastAPI

@asynccontextmanager
async def lifespan(app):
    time.sleep(600)  # a start-up that never finishes
    yield

app = FastAPI(lifespan=lifespan)
"""}, "pytest-fanout: app (hangs:app) did not answer on http://127.0.0.1:"),
    ],
    ids=["bad-module", "bad-attribute", "raises-at-startup", "hangs-at-startup"],
)
def test_app_that_cannot_start(tmp_path: Path, app: str, extra: dict, line: str) -> None:
    write(tmp_path, f"fanout_app = {app}\nfanout_startup_timeout = 3\n",
          test_stack=USES_STACK, **extra)
    (tmp_path / "pytest.ini").write_text(
        (tmp_path / "pytest.ini").read_text().replace(f"fanout_app_dir = {REPO}",
                                                      f"fanout_app_dir = {REPO}\n"
                                                      f"pythonpath = {tmp_path}")
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
        write(tmp_path, test_stack=USES_STACK, conftest=f"""
def pytest_fanout_server_setup(server, config):
    if server.name == "app":
        server.port = {port}
""")
        status, output, tag = run_tagged(tmp_path)
    finally:
        busy.close()
    assert status == pytest.ExitCode.TESTS_FAILED
    assert f"pytest-fanout: cannot bind 127.0.0.1:{port}: Address already in use" in output
    assert_nothing_left(tag)
