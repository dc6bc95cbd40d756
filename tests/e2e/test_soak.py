"""Sustained load without drift (issue 6): Locust on /async/{n}, the app's memory must not creep.

The same `run_soak()` as `benchmarks/soak.py`, shorter (30 s of load instead of
60): zero failures, the app's RSS at the end within 10% of its RSS after
warm-up, nothing left in flight, exactly n upstream calls per request, and no
process left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import SoakConfig, run_soak
from pytest_fanout.servers.proctree import pid_alive


@pytest.mark.slow
def test_async_sustains_load_without_memory_drift(tmp_path: Path) -> None:
    result = run_soak(SoakConfig(duration_s=30, users=20, n=10), workdir=tmp_path / "locust")
    report = result.table()
    print(report)
    problems = result.failures()
    assert not problems, "\n".join(problems) + "\n\n" + report
    # Each criterion once more on its own, so a regression names the one it broke.
    assert result.load.total.requests > 0 and result.load.total.failures == 0
    assert abs(result.rss_change) <= 0.10
    assert result.inflight_after == 0 and result.upstream_inflight_after == 0
    assert result.upstream_requests == 10 * result.load.total.requests
    assert not [pid for pid in result.pids if pid_alive(pid)], "stack processes left running"
