"""The tables' efficiency cell and the NAME=ENVVAR argument type: pure logic, no process."""

from __future__ import annotations

import pytest

from pytest_fanout.diagnosis import blocks_loop, efficiency_cell
from pytest_fanout.measurement import Measurement
from pytest_fanout.spec import parse_upstream


def measurement(path: str, median_s: float, lag_s: float) -> Measurement:
    return Measurement(
        path=path,
        samples=[median_s],
        loop_lag_per_sample=[lag_s],
        n=20,
        concurrency=20 if path.startswith("/async/") else 1,
        upstream_delay_s=0.1,
    )


def test_a_route_that_blocks_the_loop_is_marked_not_shown_as_healthy() -> None:
    blocking = measurement("/blocking/20", 2.02, 2.0)
    assert blocks_loop(blocking)
    assert efficiency_cell(blocking) == "0.99 (loop blocked)"


def test_a_short_stall_or_a_threadpool_route_is_not_marked() -> None:
    assert efficiency_cell(measurement("/async/20", 0.105, 0.004)) == "0.95"
    assert efficiency_cell(measurement("/sync/20", 2.02, 0.003)) == "0.99"
    # a 15 ms hiccup on a 20 ms request is over half of it, but not a block
    assert not blocks_loop(measurement("/async/20", 0.02, 0.015))
    unknown = Measurement(path="/mine", samples=[0.1], loop_lag_per_sample=[0.09])
    assert efficiency_cell(unknown) == "-"


def test_named_upstream_is_name_equals_envvar() -> None:
    assert parse_upstream("inventory=INVENTORY_URL") == ("inventory", "INVENTORY_URL")
    for bad in ("inventory", "=X", "a=", "a b=X", "a=X-Y", "1a=X"):
        with pytest.raises(ValueError, match="is not NAME=ENVVAR"):
            parse_upstream(bad)
