"""The arrival rate split over Locust workers: one master plus two workers on loopback.

Each worker runs its share of the schedule (its users / all users) and sends
its exact histograms and counts to the master (Locust's custom messages); the
master merges them. The total rate must hold within 10%, and nothing is left.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_fanout.load import marked_processes, parse_stats_json
from pytest_fanout.load.exact import apply_exact, read_exact_file
from tests.helpers import locust_master_and_workers

pytestmark = pytest.mark.slow

RATE = 40


def test_master_and_two_workers_hold_the_total_rate(tmp_path: Path) -> None:
    codes, out, marker = locust_master_and_workers(
        tmp_path,
        [
            "--headless",
            "--users",
            "10",
            "--spawn-rate",
            "10",
            "--run-time",
            "6s",
            "--json-file",
            str(tmp_path / "master"),
            "--fanout-arrival-rate",
            str(RATE),
            "--fanout-n",
            "2",
            "--fanout-upstream-delay-ms",
            "50",
            "AsyncUser",
        ],
    )
    assert codes == {"master": 0, "w1": 0, "w2": 0}, out
    assert "2 workers connected" in out["master"], out["master"]

    endpoints, total, _ = parse_stats_json(json.loads((tmp_path / "master.json").read_text()))
    endpoints, total, open_model = apply_exact(
        endpoints, total, read_exact_file(tmp_path / "master")
    )
    assert open_model is not None, out["master"]
    # Both workers reported; their shares add up to the asked rate.
    assert open_model.workers == 2 and open_model.users == 10, open_model
    assert abs(open_model.achieved_rps - RATE) <= 0.10 * RATE, open_model
    assert open_model.dropped == 0, open_model
    assert "workers sent their final numbers" not in out["master"]
    # The master's exact histogram holds every worker's requests.
    assert total.exact and endpoints["GET /async/2"].exact
    assert open_model.started - 10 <= total.requests <= open_model.started
    assert sum(total.histogram.values()) == total.requests  # every worker's final report
    assert marked_processes(marker) == []
