"""`fanout serve` shows the app's log as it comes, masked (docs/field.md): a route that
answers 500 had its cause only in the app's log, an anonymous file no one could read, so
serve's user saw nothing. The app here raises on `/boom` with a secret in the message and
answers `/fixed`; one request to each: the exception's line appears in serve's output, the
secret does not, and the fixed route adds no line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx2

from pytest_fanout.servers.process import tls_context

APP_DIR = Path(__file__).parent / "boom_app"
CAUSE = "ValueError: user_id is an int, the model wants str; token=***"


def _lines_until(proc: subprocess.Popen[str], marker: str, most: int = 500) -> list[str]:
    """serve's lines up to the one holding `marker` (the process is killed by a timer if it
    never comes, which ends the read)."""
    assert proc.stdout is not None
    lines: list[str] = []
    for _ in range(most):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} in serve's output: {lines}")


def test_serve_shows_the_apps_exception_masked() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_fanout.cli", "serve", "--app", "main:app",
         "--app-dir", str(APP_DIR), "--app-port", "0", "--upstream-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    timer = threading.Timer(90, proc.kill)  # a bound on the whole test, not a wait
    timer.start()
    try:
        head = _lines_until(proc, "Ctrl-C stops")
        app_url = re.search(r"^app\s+(http://127\.0\.0\.1:\d+)", "\n".join(head), re.M)[1]
        assert httpx2.get(app_url + "/fixed", timeout=10, verify=tls_context()).status_code == 200
        assert httpx2.get(app_url + "/boom", timeout=10, verify=tls_context()).status_code == 500
        lines = _lines_until(proc, "ValueError: user_id")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shown = [line for line in lines if line.startswith("app | ")]
    assert f"app | {CAUSE}" in shown, lines
    # The first line the app logged is the 500's: the fixed route said nothing.
    assert "Exception in ASGI application" in shown[0], shown
    assert "FIELDSECRET" not in "\n".join(head + lines) + rest
