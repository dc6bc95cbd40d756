"""Issue 31 item 3 in this process: the sampler names a warm (specialised) call site, blames a
stall on the place that held the loop longest (not the one sampled most), tells a wait from
CPU by the loop thread's own times, and `fanout measure` explains lag that code did not hold."""

from __future__ import annotations

import dis
import os
import sys
import threading
import time
from pathlib import Path

from pytest_fanout.cli.measure import measurement_report
from pytest_fanout.diagnosis import diagnose, lag_cause
from pytest_fanout.measurement import Measurement
from pytest_fanout.servers.callstacks import describe_stall
from pytest_fanout.servers.stallwatch import StallWatch, _call_at, _Stall

USER = str(Path(__file__).resolve().parent / "shop" / "views.py")
MS = 1_000_000  # nanoseconds


def _read(fd: int) -> bytes:
    return os.read(fd, 1)  # the call site under test


def _worker(warm_fd: int, block_fd: int, warmed: threading.Event) -> None:
    for _ in range(WARM_CALLS):  # past 8 calls the site is specialised (3.11: PRECALL_*)
        _read(warm_fd)
    warmed.set()
    _read(block_fd)  # waits until the test writes


WARM_CALLS = 20


def test_a_warm_call_site_is_named_by_its_call() -> None:
    """3.11 specialises a warm `os.read(fd, 1)` and stops at its PRECALL: still named."""
    warm_r, warm_w = os.pipe()
    block_r, block_w = os.pipe()
    os.write(warm_w, b"x" * WARM_CALLS)
    warmed = threading.Event()
    worker = threading.Thread(target=_worker, args=(warm_r, block_r, warmed), daemon=True)
    worker.start()
    try:
        assert warmed.wait(10)
        line = _read.__code__.co_firstlineno + 1
        frame = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # bounded: until the worker waits at the call
            frame = sys._current_frames().get(worker.ident or 0)
            if frame is not None and frame.f_code is _read.__code__ and frame.f_lineno == line:
                break
            time.sleep(0.001)
        assert frame is not None and frame.f_code is _read.__code__
        specialised = {i.opname for i in dis.get_instructions(_read.__code__, adaptive=True)} - {
            i.opname for i in dis.get_instructions(_read.__code__, adaptive=False)
        }
        assert any("CALL" in op for op in specialised), f"not specialised: {specialised}"
        assert _call_at(frame) == "os.read"
    finally:
        os.write(block_w, b"x")
        worker.join(10)
        for fd in (warm_r, warm_w, block_r, block_w):
            os.close(fd)


CPU_STACK = (
    (USER, 25, "nap"),
    ("/venv/lib/python3.11/site-packages/httpx/_client.py", 80, "AsyncClient.__init__"),
)
SLEEP_STACK = ((USER, 26, "nap"), ("<built-in>", 0, "time.sleep"))


def test_a_stall_is_blamed_on_what_held_it_longest_not_on_what_was_sampled_most() -> None:
    """A busy runner: the client's construction sampled 4 times (it ran 3 ms of every
    10, the rest waiting for a CPU the kernel had not counted yet), the sleep twice (20 ms)."""
    watch = StallWatch(0.02, 0.005)
    stall = _Stall(since=0.0, next_sample=0.0, last_clock=(0, 0, 0))
    watch._stall = stall
    at, ran = 0.005, 0
    for stack, asleep, ran_ms in [(CPU_STACK, False, 3)] * 4 + [(SLEEP_STACK, True, 0)] * 2:
        at += 0.010
        ran += ran_ms * MS
        stall.counts[stack] = stall.counts.get(stack, 0) + 1
        watch._weigh(stall, stack, at, (ran, 0, 0), asleep)
    watch._finish(stall, at, at)
    (summary,) = watch.stalls()
    first = summary["stacks"][0]
    assert [f["function"] for f in first["frames"]] == ["nap", "time.sleep"]
    assert first["count"] == 2 and summary["stacks"][1]["count"] == 4
    assert first["held_s"] == 0.02 and summary["stacks"][1]["held_s"] == 0.012
    assert describe_stall(summary).endswith(":26 in nap -> time.sleep")


def _user_stall(ran_s: float, slept_s: float) -> dict:
    frames = [{"file": USER, "line": 40, "function": "handler"}]
    stack = {"count": 5, "frames": frames, "held_s": 0.05, "ran_s": ran_s, "slept_s": slept_s}
    return {"duration_s": 0.05, "stacks": [stack]}


def test_a_wait_the_sampler_could_not_name_is_not_cpu() -> None:
    assert describe_stall(_user_stall(0.001, 0.049)).endswith(":40 in handler (waiting, not CPU)")
    assert describe_stall(_user_stall(0.049, 0.0)).endswith(":40 in handler (CPU)")


def _measured(lag_s: float, stall: dict) -> Measurement:
    return Measurement(
        path="/fanout",
        samples=[0.12] * 3,
        upstream_requests_per_sample=[4] * 3,
        upstream_peak_per_sample=[4] * 3,
        loop_lag_per_sample=[lag_s] * 3,
        upstream_delay_s=0.1,
        stalls=[stall],
        warmup=1,
    )


def _stall(duration_s: float, starved_s: float, ran_s: float) -> dict:
    frames = [{"file": USER, "line": 12, "function": "fanout"}]
    return {
        "duration_s": duration_s,
        "starved_s": starved_s,
        "ran_s": ran_s,
        "stacks": [{"count": 3, "frames": frames}],
    }


def test_loop_lag_over_the_limit_from_a_busy_runner_is_explained() -> None:
    m = _measured(0.0655, _stall(0.0655, 0.058, 0.007))
    assert [f.kind for f in diagnose(m)] == []
    cause = "waited for a CPU, the runner was busy: 58 ms runnable but not running"
    assert lag_cause(m) is not None and lag_cause(m).startswith(cause)
    report = measurement_report(m, method="GET", app="main:app", delay_ms=100)
    assert f"loop lag          65.5 ms (worst stall): {cause}" in report
    assert "nothing wrong found" in report


def test_lag_that_code_held_gets_no_excuse() -> None:
    m = _measured(0.2, _stall(0.2, 0.01, 0.19))
    assert [f.kind for f in diagnose(m)] == ["blocks-loop"]
    assert lag_cause(m) is None
    report = measurement_report(m, method="GET", app="main:app", delay_ms=100)
    assert "loop lag          200.0 ms (worst stall)\n" in report
