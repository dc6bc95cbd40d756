"""The `fanout_load` fixture: Locust against the session's app, in one line of a test."""

from __future__ import annotations

import json
import re

import pytest

from pytest_fanout.load import (
    LOCUSTFILE_ENV,
    LoadResult,
    LoadRunError,
    default_locustfile,
    run_locust,
)
from pytest_fanout.plugin import session_load_results


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


USER_LOCUSTFILE = """
from pytest_fanout.locust import *


class Checkout(FanoutUser):
    @task
    def checkout(self):
        self.get("/async/4", name="checkout")
"""


def test_fanout_load_runs_a_users_own_locustfile(fanout_load, fanout_upstream, tmp_path) -> None:
    """locustfile= is the user's file (relative paths are fine): only its users run."""
    fanout_upstream.configure(delay_ms=20, jitter_ms=0)
    fanout_upstream.reset()
    (tmp_path / "my_locustfile.py").write_text(USER_LOCUSTFILE)
    told: list[str] = []  # progress= as the terminal gets it (issue 35), here in a list
    result = fanout_load(
        users=2, run_time_s=2, locustfile=tmp_path / "my_locustfile.py", progress=told.append
    )
    assert result.exit_code == 0, result.output[-2000:]
    assert told[0] == f"locust: 2 user(s) for 2 s on {result.host}", told
    assert all(re.fullmatch(r"locust: \d+ s of 2 s", line) for line in told[1:-1]), told
    assert told[-1] == (
        f"locust: done, {result.total.requests} request(s), 0 failed (exit status 0)"
    ), told
    assert [row.key for row in result.endpoints.values()] == ["GET checkout"]
    assert result.endpoint("checkout").failures == 0
    # Four upstream calls per request, each counted by the stub (plus those of the at
    # most 2 requests cut short when the run ended).
    calls = fanout_upstream.stats()["requests"]
    assert 4 * result.total.requests <= calls <= 4 * (result.total.requests + 2)


def test_a_missing_locustfile_is_one_line_and_starts_nothing(tmp_path) -> None:
    with pytest.raises(LoadRunError) as caught:
        run_locust("http://127.0.0.1:9", locustfile=tmp_path / "nope.py", run_time_s=1)
    assert (
        str(caught.value) == f"the locustfile {tmp_path / 'nope.py'} (locustfile=) does not exist"
    )


def test_the_default_locustfile_is_the_shipped_harness(monkeypatch) -> None:
    monkeypatch.delenv(LOCUSTFILE_ENV, raising=False)
    shipped = default_locustfile()
    assert shipped.name == "locustfile.py" and shipped.parent.name == "harness"
    assert "from pytest_fanout.locust import *" in shipped.read_text()
    monkeypatch.setenv(LOCUSTFILE_ENV, "/somewhere/else.py")
    assert str(default_locustfile()) == "/somewhere/else.py"
