"""diagnose(m) on constructed Measurements: each mistake gives exactly its finding."""

from __future__ import annotations

import pytest

from pytest_fanout.diagnose import KINDS, Finding, diagnose, finding_for, headline
from pytest_fanout.measure import Measurement

HELPERS = "/srv/shop/shop/helpers.py"
SLEEP_STALL = {
    "duration_s": 0.2,
    "stacks": [
        {
            "count": 30,
            "frames": [
                {"file": HELPERS, "line": 14, "function": "load_rates"},
                {"file": "<built-in>", "line": 0, "function": "time.sleep"},
            ],
        }
    ],
}


def gauges(
    samples: int = 3,
    *,
    requests: int | list[int] = 10,
    peak: int | list[int] = 10,
    connections: int | list[int] = 0,
    rejected: int = 0,
    errors: int = 0,
) -> dict[str, list[int]]:
    def per_sample(value: int | list[int]) -> list[int]:
        return list(value) if isinstance(value, list) else [value] * samples

    return {
        "requests": per_sample(requests),
        "peak_inflight": per_sample(peak),
        "connections": per_sample(connections),
        "rejected": [rejected] + [0] * (samples - 1),
        "errors": [errors] + [0] * (samples - 1),
    }


def make(
    *,
    n: int | None = 10,
    concurrency: int | None = 10,
    lag_s: float = 0.004,
    stalls: list[dict] | None = None,
    upstreams: dict[str, dict[str, list[int]]] | None = None,
    samples: int = 3,
    **gauge: int | list[int],
) -> Measurement:
    upstreams = upstreams or {"upstream": gauges(samples, **gauge)}
    first = next(iter(upstreams.values()))
    return Measurement(
        path="/quote",
        samples=[0.12] * samples,
        upstream_requests_per_sample=first["requests"],
        upstream_peak_per_sample=first["peak_inflight"],
        loop_lag_per_sample=[lag_s] * samples,
        n=n,
        concurrency=concurrency,
        upstream_delay_s=0.1,
        upstream_gauges=upstreams,
        stalls=stalls or [],
        warmup=1,
    )


def kinds(m: Measurement) -> list[str]:
    return [f.kind for f in diagnose(m)]


def test_a_healthy_fanout_has_no_finding() -> None:
    m = make()
    assert diagnose(m) == []
    assert headline(m) == "-"


def test_blocks_loop_names_the_line_and_its_margin() -> None:
    m = make(lag_s=0.2, stalls=[SLEEP_STALL], n=1, concurrency=1, requests=1, peak=1)
    (finding,) = diagnose(m)
    assert finding.kind == "blocks-loop"
    assert not finding.exact
    assert "helpers.py:14 in load_rates -> time.sleep" in finding.message
    assert "(stalled 200 ms, 4.0x the 50 ms limit)" in finding.message


def test_blocks_loop_without_a_stack_says_so() -> None:
    (finding,) = diagnose(make(lag_s=0.2))
    assert finding.kind == "blocks-loop"
    assert "no stack" in finding.message


def test_a_blocked_loop_is_not_also_called_sequential() -> None:
    m = make(lag_s=0.2, stalls=[SLEEP_STALL], peak=1)
    assert kinds(m) == ["blocks-loop"]


def test_sequential_is_exact() -> None:
    (finding,) = diagnose(make(peak=1))
    assert finding == Finding(
        "sequential",
        "sequential: 10 calls to the upstream went one at a time (peak 1 in every sample) "
        "though /quote asks for concurrency 10: an `await` in a loop?",
        exact=True,
    )


def test_sequential_needs_a_wider_concurrency() -> None:
    assert diagnose(make(peak=1, concurrency=1)) == []
    assert diagnose(make(peak=1, n=None, concurrency=None)) == []


def test_a_connection_per_call_is_no_reuse() -> None:
    assert kinds(make(connections=10)) == ["no-connection-reuse"]


def test_new_connections_fewer_than_calls_are_churn() -> None:
    (finding,) = diagnose(make(connections=8))
    assert finding.kind == "connection-churn"
    assert finding.message.startswith("connection churn: 8 new connections to the upstream")


def test_churn_must_happen_in_every_sample() -> None:
    assert diagnose(make(connections=[3, 0, 0])) == []


def test_the_same_peak_below_the_asked_width_is_a_pool_cap() -> None:
    (finding,) = diagnose(make(peak=4))
    assert finding.kind == "pool-cap"
    assert finding.exact
    assert "at most 4 calls in flight" in finding.message


def test_a_varying_peak_or_a_single_sample_is_not_a_pool_cap() -> None:
    assert diagnose(make(peak=[4, 6, 5])) == []
    assert diagnose(make(peak=4, samples=1)) == []


def test_429s_are_not_also_a_pool_cap() -> None:
    (finding,) = diagnose(make(peak=3, rejected=21, requests=10))
    assert finding.kind == "upstream-429"
    assert "refused 21 of 30 calls with 429" in finding.message


def test_error_statuses() -> None:
    (finding,) = diagnose(make(errors=30))
    assert finding.kind == "upstream-errors"
    assert finding.message == (
        "upstream errors: the upstream answered 30 of 30 calls with an error status"
    )


def test_findings_come_in_order_of_importance() -> None:
    m = make(peak=1, connections=10, errors=3, lag_s=0.004)
    assert kinds(m) == ["sequential", "no-connection-reuse", "upstream-errors"]
    assert [k for k in KINDS if k in kinds(m)] == kinds(m)
    assert headline(m).endswith("(+2 more)")
    assert finding_for(m, "upstream-errors").kind == "upstream-errors"
    assert finding_for(m, "pool-cap") is None


def test_each_upstream_is_diagnosed_by_name() -> None:
    m = make(
        upstreams={
            "inventory": gauges(requests=10, peak=10),
            "pricing": gauges(requests=10, peak=10, rejected=4),
        }
    )
    (finding,) = diagnose(m)
    assert finding.message.startswith("upstream 429: upstream 'pricing' refused 4 of 30")


@pytest.mark.parametrize("peak", [1, 4])
def test_a_saved_measurement_gives_the_same_findings(peak: int) -> None:
    m = make(peak=peak, lag_s=0.2, stalls=[SLEEP_STALL], connections=3)
    again = Measurement.from_dict(m.to_dict())
    assert diagnose(again) == diagnose(m)


def test_a_table_cell_is_a_few_words() -> None:
    assert headline(make(peak=4)) == "pool cap: peak 4 of 10"
    blocked = make(lag_s=0.2, stalls=[SLEEP_STALL], n=1, concurrency=1, requests=1, peak=1)
    assert headline(blocked) == (
        "blocks the loop: /srv/shop/shop/helpers.py:14 in load_rates -> time.sleep"
    )
    two = make(upstreams={"inventory": gauges(), "pricing": gauges(errors=2)})
    assert headline(two) == "upstream errors (pricing): 2 of 30 calls"


def test_without_warm_up_the_first_sample_opening_the_pool_is_not_churn() -> None:
    m = make(connections=[1, 0, 0], requests=20, peak=1, n=20, concurrency=1)
    m.warmup = 0
    assert "connection-churn" not in kinds(m)
    m.upstream_gauges["upstream"]["connections"] = [1, 1, 1]
    assert "connection-churn" in kinds(m)
