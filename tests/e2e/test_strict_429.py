"""A service that fails on a 429 (raise_for_status: 500) can be measured failing, with
`expect_status=500`: the timed samples fail as expected and the held probe, which applies no
rate limit and so succeeds, still gives the structure. Found on an aiohttp order service of
our own (docs/field.md): `fanout measure --expect-status 502` stopped on the held probe's 200,
so a service that turns a 429 into an error could not be measured at all. Its fix (handling
the 429) answers 200 and is measured with the default status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.diagnosis import diagnose
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import MeasurementError, Request
from pytest_fanout.servers import Stack
from tests.helpers import measure_stack

APP_DIR = Path(__file__).parent / "ratelimit_app"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    behaviour = Behaviour(delay_ms=20, rate_limit="5/min", burst=5)
    with Stack("quotes:app", app_dir=APP_DIR, behaviour=behaviour) as stack:
        yield stack


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=60) as client:
        yield client


def test_a_service_failing_on_a_429_is_measured_failing(stack: Stack, client) -> None:
    m = measure_stack(stack, client, Request("/strict/10", expect_status=500), repeat=2)
    assert m.waves() == [10]  # the held probe's structure, though it answered 200
    assert m.status_code == 500
    kinds = [f.kind for f in diagnose(m)]
    assert "rate-exceeded" in kinds
    fixed = measure_stack(stack, client, "/gather/10", repeat=2)  # handles its 429s: 200
    assert fixed.waves() == [10]


def test_a_wrong_expected_status_still_stops_on_the_held_probe(stack: Stack, client) -> None:
    with pytest.raises(MeasurementError) as caught:  # 404 is no failure the limit causes
        measure_stack(stack, client, Request("/strict/10", expect_status=404), repeat=1)
    assert "answered 200, expected 404" in str(caught.value) or "answered 500" in str(caught.value)
