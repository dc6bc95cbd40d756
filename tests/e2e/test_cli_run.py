"""`fanout serve` and `fanout patterns` as a user runs them: real subprocesses."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx2

from tests.helpers import REPO, descendants_of, pid_alive


def _read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} within {timeout_s}s; got {lines}")


def test_serve_runs_both_and_ctrl_c_stops_both() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_fanout.cli", "serve", "--app-port", "0",
         "--upstream-port", "0", "--delay-ms", "10"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _read_until(proc, "Ctrl-C stops both", 30)
        urls = dict(re.findall(r"^(upstream|app)\s+(http://127\.0\.0\.1:\d+)", "".join(lines),
                               re.MULTILINE))
        children = descendants_of(proc.pid)
        assert len(children) >= 2
        body = httpx2.get(urls["app"] + "/async/5", timeout=10).json()
        assert body["status_codes"] == [200] * 5
        token = re.search(r"^token\s+(\S+)", "".join(lines), re.MULTILINE)[1]
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx2.get(urls["upstream"] + "/__upstream__/stats").status_code == 403
        stats = httpx2.get(urls["upstream"] + "/__upstream__/stats", headers=auth).json()
        assert stats["requests"] == 5
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval
    assert not any(pid_alive(p) for p in children)


def test_patterns_prints_the_comparison_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "patterns", "--n", "6",
         "--max-concurrent", "2", "--delay-ms", "30", "--repeat", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()
            if line.startswith(("sync ", "async ", "async_sem ", "blocking "))}
    assert set(rows) == {"sync", "async", "async_sem", "blocking"}
    # the peak-in-flight column is exact: 1, 6, 2, 1
    peaks = {name: int(re.search(r"x\s+(\d+)\s", " ".join(r)).group(1)) for name, r in rows.items()}
    assert peaks == {"sync": 1, "async": 6, "async_sem": 2, "blocking": 1}
