"""`locust -f locustfiles/` as a user types it, from the repository root (so locust.conf applies).

Every run is a real Locust process, bounded by --run-time and a subprocess
timeout. Each one carries a marker in its environment, inherited by
everything it starts (the embedded stack included), so "nothing is left
afterwards" is an exact scan of /proc, not a guess.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pytest_fanout.load import (
    EXIT_FAILED_REQUESTS,
    EXIT_TARGET,
    EXIT_USAGE,
    MARKER_ENV,
    kill_marked,
    marked_processes,
    parse_stats_json,
)
from tests.helpers import REPO, locust


def stack_pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"fanout: embedded stack: .* \(pid (\d+)", output)]


def test_headless_run_on_the_embedded_stack_writes_reports_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "report"
    code, output, marker = locust(
        "-f",
        "locustfiles/",
        "--headless",
        "--run-time",
        "4s",
        "--users",
        "6",
        "--csv",
        str(prefix),
        "--html",
        str(tmp_path / "report.html"),
        "--json-file",
        str(prefix),
    )
    assert code == 0, output
    # The stack was started by the locustfiles and stopped when Locust quit.
    pids = stack_pids(output)
    assert len(pids) == 2, output
    assert "fanout: embedded stack stopped" in output
    assert not [
        pid
        for pid in pids
        if Path(f"/proc/{pid}").exists()
        and "pytest_fanout.servers.child" in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    assert marked_processes(marker) == []
    # locust.conf's threshold was checked, and met.
    assert "fanout: thresholds met: --fanout-max-fail-ratio 0.01" in output
    # The three reports, where asked.
    for name in (
        "report_stats.csv",
        "report_stats_history.csv",
        "report_failures.csv",
        "report.html",
        "report.json",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    endpoints, total, _ = parse_stats_json(json.loads((tmp_path / "report.json").read_text()))
    # The default set: the three patterns, not the blocking anti-pattern.
    assert sorted(endpoints) == ["GET /async/10", "GET /async_sem/10/5", "GET /sync/10"]
    assert total.requests > 0 and total.failures == 0
    assert "/async_sem/10/5" in (tmp_path / "report.html").read_text()
    assert "/async/10" in (tmp_path / "report_stats.csv").read_text()


def test_unknown_user_class_is_one_line_and_starts_nothing() -> None:
    code, output, _ = locust("-f", "locustfiles/", "--run-time", "2s", "NoSuchUser")
    assert code == EXIT_FAILED_REQUESTS  # Locust's own status for this error
    assert "Unknown User(s): NoSuchUser" in output
    assert "Traceback" not in output
    assert "embedded stack" not in output


def test_a_host_that_does_not_answer_is_one_line_and_its_own_exit_status() -> None:
    # Bound but not listening: the port stays ours, and every connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, output, _ = locust(
            "-f", "locustfiles/", "--run-time", "2s", "--host", f"http://127.0.0.1:{port}"
        )
    assert code == EXIT_TARGET, output
    assert f"fanout: error: --host http://127.0.0.1:{port} does not answer" in output
    assert "Traceback" not in output
    assert "embedded stack" not in output  # --host given: nothing of ours starts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fanout-max-p95-ms", "fast"], "argument --fanout-max-p95-ms: 'fast' is not a number"),
        (["--fanout-max-fail-ratio", "2"], "--fanout-max-fail-ratio: 2 must be between 0 and 1"),
        (["--fanout-min-rps", "-5"], "--fanout-min-rps: -5 must be a finite number >= 0"),
        (["--fanout-n", "0"], "argument --fanout-n: 0 must be at least 1"),
        (["--tags", "nosuch"], "fanout: error: no user class is left after --tags"),
    ],
)
def test_nonsense_options_are_one_line_and_a_usage_status(args: list[str], message: str) -> None:
    code, output, _ = locust("-f", "locustfiles/", "--run-time", "2s", *args)
    assert code == EXIT_USAGE, output
    assert message in output
    assert "Traceback" not in output
    assert "embedded stack" not in output


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll `predicate` until true; fail after `timeout` seconds (polling, not sleeping on it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def completed(stats_csv: Path) -> int:
    """Requests completed without failure so far, from Locust's live CSV (0 before it exists)."""
    if not stats_csv.exists():
        return 0
    for row in csv.DictReader(stats_csv.read_text().splitlines()):
        if row.get("Name") == "Aggregated":
            return int(row["Request Count"]) - int(row["Failure Count"])
    return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_locust_stopped_mid_run_leaves_no_process(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM: Locust quits cleanly (users stopped, thresholds checked, stack stopped).
    SIGKILL: nothing runs in Locust any more; the stack's children notice their parent's
    end (their stdin closes) and stop themselves."""
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "locust.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                "locustfiles/",
                "--headless",
                "--run-time",
                "60s",
                "--users",
                "4",
                "--csv",
                str(tmp_path / "live"),
                "AsyncUser",
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "All users spawned" in log_path.read_text() or proc.poll() is not None,
            30,
            "Locust to start its users",
        )
        assert proc.poll() is None, log_path.read_text()
        assert len(stack_pids(log_path.read_text())) == 2
        # Zero is not a pass: stop once requests completed (Locust rewrites the CSV each second).
        wait_for(lambda: completed(tmp_path / "live_stats.csv") > 0, 30, "a completed request")
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        wait_for(lambda: not marked_processes(marker), 15, "the stack's processes to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = kill_marked(marker)
    assert not left
    output = log_path.read_text()
    if sig == signal.SIGTERM:
        assert code == 0, output
        assert "fanout: thresholds met" in output and "fanout: embedded stack stopped" in output
    else:
        assert code == -signal.SIGKILL


WEB_UI_LABELS = """
import json, re
from locust.argument_parser import get_parser
import pytest_fanout.locust  # registers the options
parser = get_parser(default_config_files=[])
shown = parser.args_included_in_web_ui
def label(dest):  # what Locust's web UI does: camelCase, then split at capitals and digits
    camel = re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), dest)
    spaced = re.sub(r"([a-z0-9])([A-Z0-9])", r"\\1 \\2", camel)
    return spaced[0].upper() + spaced[1:]
print(json.dumps({d: [label(d), a.help] for d, a in shown.items() if d.startswith("fanout")}))
"""


def test_web_ui_labels_are_words_with_their_help() -> None:
    """Locust's web UI labels an option with its dest (split at capitals AND digits) and
    its help: "fanout_max_p95_ms" would read "Fanout Max P9 5Ms"."""
    result = subprocess.run(
        [sys.executable, "-c", WEB_UI_LABELS], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    labels = json.loads(result.stdout)
    assert labels["fanout_max_latency_ms"][0] == "Fanout Max Latency Ms"
    assert "p95" in labels["fanout_max_latency_ms"][1]
    assert sorted(labels) == [
        "fanout_calls",
        "fanout_max_failure_ratio",
        "fanout_max_latency_ms",
        "fanout_min_completed",
        "fanout_min_throughput",
        "fanout_semaphore",
    ]
    for dest, (text, help_text) in labels.items():
        assert not re.search(r"\d", text), (dest, text)
        assert help_text and len(help_text) > 20, dest


def test_web_host_under_a_headless_config_says_how_to_get_the_ui() -> None:
    """locust.conf runs headless; `--web-host` alone cannot undo that (Locust keeps a
    config file's store_true), so the harness says in one line to add --headful."""
    code, output, _ = locust(
        "-f", "locustfiles/", "--web-host", "127.0.0.1", "--run-time", "2s", "-u", "1",
        "AsyncUser",
    )  # fmt: skip
    assert code == 0, output
    notes = [line for line in output.splitlines() if "--web-host is ignored" in line]
    assert notes == [
        "fanout: note: --web-host is ignored: this run is headless (--headless, or"
        " headless = true in locust.conf); add --headful for the web UI"
    ], output
