"""Issue 33's findings on rate-limited upstreams, from the stub's exact facts: rate exceeded,
a retry storm, Retry-After ignored, and two retry layers that multiply (the schedule read
off the waits between one call's tries)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_fanout.diagnosis import (
    KINDS,
    NAMES,
    _rate_exceeded,
    _retry_after_ignored,
    _retry_amplification,
    _retry_storm,
    retry_layers,
)
from pytest_fanout.measurement import Measurement


@dataclass(frozen=True)
class Wait:
    method: str
    path: str
    asked_s: float | None
    waited_s: float
    sample: int = 0


def facts(**values: Any) -> Any:
    base = dict(
        name="quotes",
        requests_per_sample=[10, 10, 10],
        rejected=15,
        rejected_per_sample=[5, 5, 5],
        waves=None,
        retries=0,
        amplification=1.0,
        retry_waits=[],
        burst=5,
    )
    base.update(values)
    gauges = SimpleNamespace(**base)
    gauges.requests = max(gauges.requests_per_sample)
    return gauges


M = Measurement(path="/quotes", samples=[0.1] * 3, upstream_gauges={"quotes": {}})


def test_every_new_kind_has_its_name_and_a_place_in_the_order() -> None:
    for kind in ("rate-exceeded", "retry-storm", "retry-after-ignored", "retry-amplification"):
        assert kind in KINDS and NAMES[kind]


def test_a_semaphore_against_a_rate_limit_is_named_with_its_numbers() -> None:
    found = _rate_exceeded(M, facts(waves=[4, 4, 2]), "the upstream", "5/s")
    assert found.kind == "rate-exceeded" and found.exact
    assert found.message == (
        "rate exceeded: the upstream allows 5/s (burst 5) and answered 429 to 5 of 10 calls "
        "in every sample: the service keeps 4 calls in flight at once (held waves [4, 4, 2]): "
        "a semaphore bounds how many calls are in flight, not how many per second; pace the "
        "calls with a rate limiter (aiolimiter's AsyncLimiter(5, 1))"
    )
    gathered = _rate_exceeded(M, facts(waves=[10]), "the upstream", "3000/min")
    assert "semaphore" not in gathered.message
    assert "sends faster than the limit" in gathered.message
    assert "AsyncLimiter(3000, 60)" in gathered.message


def storm(waited_s: float, asked_s: float | None = 0.2) -> Any:
    waits = [Wait("GET", f"/quote/{i}", asked_s, waited_s) for i in range(5) for _ in range(3)]
    return facts(retries=15, amplification=3.0, retry_waits=waits)


def test_immediate_retries_are_a_storm_and_not_also_retry_after_ignored() -> None:
    g = storm(0.002)
    found = _retry_storm(M, g, "'quotes'")
    assert found is not None and found.kind == "retry-storm"
    assert "15 retries over 3 samples (amplification 3.00" in found.message
    assert "15 of them came within 2 ms of its 429 (it asked for 200 ms): no backoff" in (
        found.message
    )
    assert _retry_after_ignored(M, g, "'quotes'") is None


def test_a_retry_that_waits_less_than_asked_ignores_retry_after() -> None:
    g = storm(0.1)
    assert _retry_storm(M, g, "'quotes'") is None
    found = _retry_after_ignored(M, g, "'quotes'")
    assert found is not None
    assert found.message.startswith(
        "retry-after ignored: 15 of 15 retries to 'quotes' came sooner than the wait their "
        "429 asked for (e.g. GET /quote/0 100 ms after its 429, which asked for 200 ms)"
    )


def test_retries_that_wait_what_was_asked_are_no_finding() -> None:
    g = storm(0.2)
    for check in (_retry_storm, _retry_after_ignored, _retry_amplification):
        assert check(M, g, "'quotes'") is None


@pytest.mark.parametrize(
    ("gaps", "layers"),
    [
        ([0.02, 0.02, 5.0, 0.02, 0.02, 5.0, 0.02, 0.02], (3, 3)),
        ([0.5, 1.0, 7.0] * 5 + [0.5, 1.0], (3, 6)),
        ([0.1] * 8, None),
        ([0.1, 0.2, 0.4, 0.8], None),
    ],
)
def test_the_schedule_of_two_layers_is_read_off_the_waits(
    gaps: list[float], layers: tuple[int, int] | None
) -> None:
    assert retry_layers(gaps) == layers


def test_eighteen_calls_for_one_are_named_with_their_schedule() -> None:
    """The issue's labelling backend: tenacity (6 attempts, ~7 s apart) around an OpenAI
    client that tries 3 times (0.5 s, 1 s backoff): 18 calls for one."""
    gaps = [0.5, 1.0, 7.0] * 5 + [0.5, 1.0]
    waits = [Wait("POST", "/v1/chat/completions", 1.0, gap) for gap in gaps]
    g = facts(retries=17, amplification=18.0, retry_waits=waits)
    found = _retry_amplification(M, g, "'openai'")
    assert found is not None and found.kind == "retry-amplification"
    assert found.message.startswith(
        "retry amplification: 18 calls for one: 3 tries x 6 attempts, 44 s "
        "(POST /v1/chat/completions to 'openai'): two retry layers multiply"
    )
    # One layer's own retries (1 + 3) are not amplification.
    few = facts(retries=3, retry_waits=waits[:3])
    assert _retry_amplification(M, few, "'openai'") is None
