"""The Locust half of the performance suite: sustained load the gate compares run to run.

    pytest benchmarks/perf_load --fanout-save=load.json --fanout-compare=baseline.json

Each `fanout_load(...)` run is one gate case per endpoint plus one for the
total; the gate tests p95 on Locust's response-time histograms and the
failure ratio per request (docs/gating.md).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.fanout_upstream(delay_ms=100)


def test_async_patterns_under_load(fanout_load):
    result = fanout_load(
        users=10, run_time_s=8, n=10, max_concurrent=5, user_classes=["AsyncUser", "AsyncSemUser"]
    )
    assert result.total.failures == 0
    assert result.endpoint("/async/").requests > 0 and result.endpoint("/async_sem/").requests > 0
