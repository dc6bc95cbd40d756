"""Orphaned upstream work, counted exactly, on a service written the way users write it
(`orphans_app/shop.py`): a failed `asyncio.gather` leaves its other calls running, a
`TaskGroup` cancels them, `gather(return_exceptions=True)` waits for them all; an
ordinary endpoint runs on after the caller hangs up, one that watches for the disconnect
and a streamed one stop. Every count is compared with the service's own account.

Counts, not timings: each orphan outlives the answer by most of its 400 ms delay, each
cancelled call ends within a few ms of the cancel, so a loaded runner moves neither
across the line (`ORPHAN_GRACE_S`, 50 ms; the hang-up's grace, 100 ms).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.assertions import (
    FanoutAssertionError,
    assert_cancels_on_disconnect,
    assert_no_orphans,
)
from pytest_fanout.diagnosis import diagnose
from pytest_fanout.limits import Behaviour
from pytest_fanout.measure import measure
from pytest_fanout.measurement import FanoutWarning, Measurement, MeasurementError, Request
from pytest_fanout.servers import Stack
from pytest_fanout.servers.process import tls_context

APP_DIR = Path(__file__).parent / "orphans_app"
PART_MS = 400
REPEAT = 3


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(
        "shop:app",
        app_dir=APP_DIR,
        behaviour=Behaviour(delay_ms=10),
        upstreams={"parts": "FANOUT_UPSTREAM_URL"},
    ) as stack:
        parts = stack.upstreams["parts"]
        parts.route("GET", "/part/{i}", json={"part": "{i}"}, delay_ms=PART_MS)
        parts.route("GET", "/fail", status=500, json={"error": "boom"}, delay_ms=20)
        parts.route("GET", "/stuck", hang=True)
        yield stack


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        yield client


def take(
    stack: Stack, client: httpx2.Client, path: str, status: int = 200, **kwargs: object
) -> tuple[Measurement, dict[str, int]]:
    """A measurement of `path`, and the service's own counters over it (warm-up and the
    held probe included: `per_request` divides them)."""
    assert stack.app is not None
    client.delete(stack.app.url + "/counters").raise_for_status()
    m = measure(
        client,
        stack.app.url,
        Request(path, expect_status=status),
        upstreams=stack.upstreams,
        app=stack.app,
        repeat=REPEAT,
        warmup=1,
        **kwargs,  # type: ignore[arg-type]
    )
    counters = client.get(stack.app.url + "/counters").raise_for_status().json()
    return m, counters


# Requests the service saw per measurement: the warm-up, the held probe, the samples.
REQUESTS = 1 + 1 + REPEAT


def test_gather_leaves_orphans_counted_exactly(stack: Stack, client: httpx2.Client) -> None:
    with pytest.warns(FanoutWarning, match=r"GET /gather-fail left calls running .*9 at"):
        m, counters = take(stack, client, "/gather-fail", status=502)
    g = m.upstream("parts")
    assert g.orphaned_per_sample == [3] * REPEAT
    assert g.orphaned == 3 * REPEAT
    # The service's own account: 3 calls still running at each of its answers (the held
    # probe's included, whose calls are released together, so none is orphaned there).
    assert counters["orphaned"] in (3 * REQUESTS, 3 * (REQUESTS - 1))
    with pytest.raises(FanoutAssertionError) as caught:
        assert_no_orphans(m)
    assert str(caught.value).startswith(
        "9 calls to 'parts' ran on after GET /gather-fail answered 502 ([3, 3, 3] over 3 "
        "samples): asyncio.gather does not cancel the other calls when one fails; use "
        "asyncio.TaskGroup, or cancel them"
    )
    kinds = [f.kind for f in diagnose(m)]
    assert "orphaned-calls" in kinds


def test_taskgroup_cancels_no_orphans(stack: Stack, client: httpx2.Client) -> None:
    m, counters = take(stack, client, "/taskgroup-fail", status=502)
    g = m.upstream("parts")
    assert g.orphaned_per_sample == [0] * REPEAT
    assert counters["orphaned"] == 0
    assert counters["cancelled"] >= 3 * REPEAT
    # The cancelled calls' connections closed unanswered: counted as cut, and the new
    # connections of the next sample are not read as a client per request or churn.
    assert g.cut_per_sample == [3] * REPEAT
    kinds = [f.kind for f in diagnose(m)]
    assert "orphaned-calls" not in kinds
    assert "no-connection-reuse" not in kinds and "connection-churn" not in kinds, kinds
    assert_no_orphans(m)


def test_gather_return_exceptions_runs_all_to_the_end(stack: Stack, client: httpx2.Client) -> None:
    m, counters = take(stack, client, "/gather-settled", status=502)
    assert m.upstream("parts").orphaned_per_sample == [0] * REPEAT
    assert counters["orphaned"] == 0
    assert counters["cancelled"] == 0
    # It waited for every call: the answer took the parts' whole delay.
    assert min(m.samples) >= PART_MS / 1000
    assert_no_orphans(m)


def test_ordinary_endpoint_runs_on_after_the_caller_hangs_up(
    stack: Stack, client: httpx2.Client
) -> None:
    m, counters = take(stack, client, "/summary", disconnect_after_s=0.1)
    g = m.upstream("parts")
    assert g.after_disconnect_per_sample == [5] * REPEAT
    assert g.orphaned_per_sample == []  # not measured in a hang-up
    # The service's own account: every call ran to its end, none was cancelled.
    assert counters["completed"] == 5 * REQUESTS
    assert counters["cancelled"] == 0
    with pytest.raises(FanoutAssertionError) as caught:
        assert_cancels_on_disconnect(m)
    assert str(caught.value).startswith(
        "15 calls to 'parts' ran on after the caller hung up on GET /summary at 100 ms"
    )
    assert "work-after-disconnect" in [f.kind for f in diagnose(m)]


def test_endpoint_that_watches_for_the_disconnect_stops(
    stack: Stack, client: httpx2.Client
) -> None:
    m, counters = take(stack, client, "/summary-cancels", disconnect_after_s=0.1)
    g = m.upstream("parts")
    assert g.after_disconnect_per_sample == [0] * REPEAT
    # Cut at the stub: the app's cancel closed each call's connection.
    assert g.cut_per_sample == [5] * REPEAT
    # Cancelled in every hung-up request (warm-up and samples; the held probe is answered).
    assert counters["cancelled"] == 5 * (REQUESTS - 1)
    assert counters["completed"] == 5
    assert_cancels_on_disconnect(m)
    assert "work-after-disconnect" not in [f.kind for f in diagnose(m)]


def test_streamed_endpoint_cancels_in_the_app_but_not_at_the_upstream(
    stack: Stack, client: httpx2.Client
) -> None:
    """Starlette cancels a StreamingResponse's body when the caller hangs up (the service
    counts its 5 calls cancelled), yet the upstream sees no connection close: httpx,
    cancelled by Starlette's anyio cancel scope, leaves them open, and the upstream works
    on to the end. The harness counts what the upstream did, and says so."""
    m, counters = take(stack, client, "/summary-stream", disconnect_after_s=0.1)
    g = m.upstream("parts")
    assert counters["cancelled"] == 5 * (REQUESTS - 1)
    assert g.cut_per_sample == [0] * REPEAT
    assert g.after_disconnect_per_sample == [5] * REPEAT
    with pytest.raises(FanoutAssertionError, match="15 calls to 'parts' ran on"):
        assert_cancels_on_disconnect(m)


def test_assertions_say_what_was_not_measured(stack: Stack, client: httpx2.Client) -> None:
    m, _ = take(stack, client, "/gather-settled", status=502)
    with pytest.raises(
        FanoutAssertionError, match="no after disconnect counts .* disconnect_after_s"
    ):
        assert_cancels_on_disconnect(m)


def test_a_hung_upstream_and_a_service_without_a_timeout(stack: Stack) -> None:
    """`hang=True`: the stub holds the call until its client goes away. Without a timeout
    the service waits as long as the harness does: one line names the hung upstream and
    the missing timeout, and the held call is released so the app's request ends."""
    assert stack.app is not None
    with (
        httpx2.Client(timeout=2, verify=tls_context()) as impatient,
        pytest.raises(MeasurementError) as caught,
    ):
        measure(
            impatient,
            stack.app.url,
            Request("/hung-no-timeout"),
            upstreams=stack.upstreams,
            app=stack.app,
            repeat=1,
            warmup=0,
            held_probe=False,
        )
    message = str(caught.value)
    assert message.startswith(
        "no timeout: GET /hung-no-timeout waited on the hung upstream (1 call(s) to 'parts', "
        "never answered: hang = true) until the harness gave up (GET /hung-no-timeout did not "
        "answer within 2 s"
    ), message
    assert "\n" not in message
    assert stack.upstreams["parts"].stats()["hung_now"] == 0  # released


def test_a_service_with_a_timeout_is_timed_as_it_answers(
    stack: Stack, client: httpx2.Client
) -> None:
    m, counters = take(stack, client, "/hung-with-timeout", status=504)
    # Its own 200 ms timeout, not the harness's: the answer came when the service gave up.
    assert min(m.samples) >= 0.2 and m.median_s < 2
    g = m.upstream("parts")
    # The timeout cancelled the call: its connection closed, the stub let it go.
    assert g.orphaned_per_sample == [0] * REPEAT
    assert g.cut_per_sample == [1] * REPEAT
    assert stack.upstreams["parts"].stats()["hung_now"] == 0


def test_fanout_measure_disconnect_after() -> None:
    """`fanout measure --disconnect-after` as a user runs it: a real subprocess."""
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_fanout.cli",
            "measure",
            "/summary",
            "--app",
            "shop:app",
            "--app-dir",
            str(APP_DIR),
            "--delay-ms",
            str(PART_MS),
            "--repeat",
            "2",
            "--disconnect-after",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 calls ran on after the hang-up at 100 ms (per sample [5, 5])" in result.stdout
    assert "finding           work after disconnect: 10 calls" in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "measure", "/x", "--disconnect-after", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode == 2 and "--disconnect-after" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
