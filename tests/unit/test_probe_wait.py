"""The probe's run-queue wait: read per thread from /proc, differenced per sample, None (never
0) where /proc does not say."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pytest_fanout.servers import probe
from pytest_fanout.servers.probe import run_queue_waits, waited_since


def test_threads_started_since_count_from_zero_and_reused_ids_as_new() -> None:
    before = {"1": 5_000_000, "2": 1_000_000, "3": 9_000_000}
    # 1 waited 2 ms more; 2 ended (lost); 3's id now names a new thread (its count went down);
    # 4 started since and waited 0.5 ms.
    after = {"1": 7_000_000, "3": 250_000, "4": 500_000}
    assert waited_since(before, after) == pytest.approx(0.00275)
    assert waited_since(None, after) is None
    assert waited_since(before, None) is None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux's /proc")
def test_every_thread_is_read_but_the_one_skipped() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        waits = run_queue_waits()
        assert waits is not None
        assert {str(threading.get_native_id()), str(other.native_id)} <= set(waits)
        assert all(isinstance(v, int) and v >= 0 for v in waits.values())
        skipped = run_queue_waits(skip=other.native_id)
        assert skipped is not None and str(other.native_id) not in skipped
    finally:
        stop.set()
        other.join(5)


def test_no_proc_is_none_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(path: str) -> list[str]:
        raise FileNotFoundError(path)

    monkeypatch.setattr(probe.os, "listdir", no_proc)
    assert run_queue_waits() is None
