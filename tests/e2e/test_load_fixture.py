"""The `fanout_load` fixture: Locust against the session's app, in one line of a test."""

from __future__ import annotations

import json

from pytest_fanout.load import LoadResult
from pytest_fanout.results import session_load_results


def test_async_sustains_3x_the_requests_per_second_of_sync(
    fanout_load, fanout_upstream, pytestconfig
) -> None:
    """Same run, same users split evenly: closed-loop users make requests/s = users / latency.

    At n=10 and 100 ms per call, sync takes ~1 s and async ~0.1 s: ~10x.
    3x leaves room for a noisy 2-core machine.
    """
    fanout_upstream.configure(delay_ms=100, jitter_ms=0)
    result = fanout_load(users=10, run_time_s=6, n=10, user_classes=["SyncUser", "AsyncUser"])

    assert result.exit_code == 0, result.output[-2000:]
    sync, gather = result.endpoint("/sync/10"), result.endpoint("/async/10")
    assert sync.failures == 0 and gather.failures == 0
    assert sync.requests > 0
    assert gather.rps >= 3 * sync.rps, result.table()
    assert gather.p95_ms < sync.p50_ms, result.table()

    # Kept for the gate, and JSON-serialisable with its documented shape.
    assert session_load_results(pytestconfig)[-1] is result
    data = json.loads(json.dumps(result.to_dict()))
    assert data["endpoints"]["GET /async/10"]["requests"] == gather.requests
    assert LoadResult.from_dict(data).to_dict() == data
