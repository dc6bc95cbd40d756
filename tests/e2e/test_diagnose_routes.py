"""diagnose(m), end to end: a small service with one route per fan-out mistake (and a
healthy one), real stub upstreams counting requests, peaks, connections and 429s.
Each route gives exactly its finding and nothing else."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.diagnosis import diagnose
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import Measurement, Request
from pytest_fanout.servers import Stack
from pytest_fanout.servers.process import tls_context
from tests.helpers import REPO, measure_stack

APP_DIR = Path(__file__).parent / "diagnose_app"
APP_REL = APP_DIR.relative_to(REPO).as_posix()
#: The blocking limit is 40 ms whatever the delay; each blocking call holds the loop 200 ms.
DELAY_MS = 200
UPSTREAMS = {"main": "FANOUT_UPSTREAM_URL", "limited": "LIMITED_URL", "flaky": "FLAKY_URL"}
N = 10


def line_of(filename: str, text: str) -> int:
    lines = (APP_DIR / filename).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(
        "main:app",
        app_dir=APP_DIR,
        behaviour=Behaviour(delay_ms=DELAY_MS),
        upstreams=UPSTREAMS,
    ) as stack:
        stack.upstreams["limited"].configure(max_inflight=3)
        stack.upstreams["flaky"].configure(error_rate=1.0)
        yield stack


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30, verify=tls_context()) as client:
        yield client


def take(stack: Stack, client: httpx2.Client, path: str, **shape: int) -> Measurement:
    return measure_stack(stack, client, Request(path), **shape)


@pytest.mark.parametrize(
    ("path", "shape", "kind"),
    [
        ("/sequential", {"n": 4, "concurrency": 4}, "sequential"),
        ("/client-per-call", {"n": N, "concurrency": N}, "no-connection-reuse"),
        ("/small-keepalive", {"n": N, "concurrency": N}, "connection-churn"),
        ("/pool-capped", {"n": N, "concurrency": N}, "pool-cap"),
        ("/limited", {"n": N, "concurrency": N}, "upstream-429"),
        ("/flaky", {"n": N, "concurrency": N}, "upstream-errors"),
    ],
)
def test_each_mistake_gives_exactly_its_finding(
    stack: Stack, client: httpx2.Client, path: str, shape: dict[str, int], kind: str
) -> None:
    m = take(stack, client, path, **shape)
    findings = diagnose(m)
    assert [f.kind for f in findings if f.exact] == [kind], [f.message for f in findings]
    assert findings[0].kind == kind  # exact findings first
    # On a loaded runner the timed samples may fall short of the structure: that, and only
    # that, may be added (never in place of the exact finding).
    assert {f.kind for f in findings[1:]} <= {"slow-client"}, [f.message for f in findings]


def test_the_exact_counts_behind_the_findings(stack: Stack, client: httpx2.Client) -> None:
    churn = take(stack, client, "/small-keepalive", n=N, concurrency=N)
    # The pool keeps 2 connections alive: 8 new ones for every fan-out of 10.
    assert churn.upstream("main").connections_per_sample == [N - 2, N - 2]
    capped = take(stack, client, "/pool-capped", n=N, concurrency=N)
    assert capped.structure["main"] == [4, 4, 2]
    limited = take(stack, client, "/limited", n=N, concurrency=N)
    assert limited.upstream("limited").rejected == 2 * (N - 3)


def test_a_healthy_fanout_has_no_finding(stack: Stack, client: httpx2.Client) -> None:
    m = take(stack, client, "/healthy", n=N, concurrency=N)
    assert m.structure == {"main": [N], "limited": [], "flaky": []}
    findings = diagnose(m)
    assert [f.kind for f in findings if f.kind != "slow-client"] == [], findings
    if findings:  # a loaded runner: the timed peak fell short, and the message says why
        assert m.upstream("main").peak_inflight < N


@pytest.mark.parametrize(
    ("path", "shape", "where"),
    [
        (
            "/blocking-io",
            {"n": 1, "concurrency": 1},
            f"{APP_REL}/helpers.py:{line_of('helpers.py', '_SYNC.get(')} in load_rates "
            "-> httpx.Client.get",
        ),
        (
            "/sleep",
            {},
            f"{APP_REL}/main.py:{line_of('main.py', 'time.sleep(0.3)')} in sleepy -> time.sleep",
        ),
        ("/cpu", {}, f"{APP_REL}/helpers.py:"),
    ],
)
def test_a_blocking_route_is_named_by_file_and_function(
    stack: Stack,
    client: httpx2.Client,
    path: str,
    shape: dict[str, int],
    where: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)  # paths are shown relative to the working directory
    m = take(stack, client, path, **shape)
    findings = diagnose(m)
    assert [f.kind for f in findings] == ["blocks-loop"], [f.message for f in findings]
    message = findings[0].message
    assert message.startswith(f"blocks the loop: {where}"), message
    assert not findings[0].exact
    assert "x the 40 ms limit" in message  # whatever the delay (measure.BLOCKING_LIMIT_S)
    if path == "/cpu":
        assert " in crunch (CPU) (held it " in message
    else:  # the loop waited in the call (I/O or a sleep), and the finding says so
        assert "the loop waited in that call (I/O or a sleep, not CPU)" in message


def _fanout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_fanout_measure_ends_with_the_findings() -> None:
    common = ["--app", "main:app", "--app-dir", APP_REL, "--repeat", "1", "--delay-ms", "200"]
    blocked = _fanout("measure", "/sleep", *common)
    assert blocked.returncode == 0, blocked.stdout + blocked.stderr
    line = line_of("main.py", "time.sleep(0.3)")
    last = blocked.stdout.strip().splitlines()[-1]
    assert last.startswith(
        f"  finding           blocks the loop: {APP_REL}/main.py:{line} in sleepy -> time.sleep"
    ), blocked.stdout
    healthy = _fanout("measure", "/healthy", *common, "--n", "10")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.strip().splitlines()[-1] == "  finding           - (nothing wrong found)"
