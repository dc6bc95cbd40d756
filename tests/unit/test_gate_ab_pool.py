"""The A/B sampler's own samples are bounded in count and in time, and a block that fails
stops them with why (blocks faked here; tests/plugin/test_gate_ab.py runs real ones)."""

from __future__ import annotations

from typing import Any

from pytest_fanout.gate.ab import AlternatingSampler
from pytest_fanout.measurement import Measurement, MeasurementError
from pytest_fanout.servers.stack import AppServer


def sample() -> Measurement:
    return Measurement(path="/p", samples=[0.1], app_cpu_per_sample=[0.004])


class FakeBlocks(AlternatingSampler):
    """Blocks without processes: `count` one-sample measurements a side, or a failure."""

    def __init__(self, wants: Any, *, fail_at: int | None = None, **bounds: Any) -> None:
        super().__init__(AppServer(), "base", wants=wants, **bounds)
        self.fail_at = fail_at
        self.blocks = 0

    def _block(self, client: Any, request: Any, app: Any, index: int, count: int, kwargs: Any):
        if index == self.fail_at:
            raise MeasurementError("the app process died (exit 1) during GET /p\nlog tail")
        self.blocks += 1
        return [sample() for _ in range(count)], [sample() for _ in range(count)]


def pool(sampler: FakeBlocks, more: int, repeat: int = 10) -> dict[str, Any]:
    own = ([sample()] * repeat, [sample()] * repeat)
    head, base = sampler._pool(None, None, AppServer(), own, more, {})
    assert head["processes"] == base["processes"] == sampler.blocks
    assert len(head["samples"]) == len(base["samples"])
    return head


def test_it_takes_what_is_wanted_then_stops() -> None:
    def wants(head: Measurement, base: Measurement, own: int) -> tuple[int, bool]:
        return max(0, 20 - len(head.samples)), False

    head = pool(FakeBlocks(wants), more=10)
    assert len(head["samples"]) == 12 and head["needed"] == 20 and head["short"] == ""


def test_noise_that_never_settles_stops_at_the_count_bound() -> None:
    sampler = FakeBlocks(lambda h, b, own: (0, True), max_samples=12)
    head = pool(sampler, more=1)
    assert len(head["samples"]) == 12 and sampler.blocks == 3
    assert head["short"] == ""  # judged on what was taken: the count was met


def test_past_the_count_bound_nothing_is_taken_and_the_bound_is_said() -> None:
    sampler = FakeBlocks(lambda h, b, own: (0, False), max_samples=48)
    head = pool(sampler, more=79)
    assert sampler.blocks == 0 and head["samples"] == []
    assert head["short"] == "needed 89 samples a side, the bound is 58"


def test_the_time_bound_stops_the_blocks() -> None:
    sampler = FakeBlocks(lambda h, b, own: (10, False), max_s=0.0)
    head = pool(sampler, more=10)
    assert sampler.blocks == 0
    assert head["short"] == "needed 20 samples a side, took 10 in the 0 s bound"


def test_a_block_that_fails_stops_them_with_one_line() -> None:
    sampler = FakeBlocks(lambda h, b, own: (20 - len(h.samples), False), fail_at=1)
    head = pool(sampler, more=10)
    assert sampler.blocks == 1 and len(head["samples"]) == 4
    assert head["short"] == (
        "a fresh app process for more samples failed: the app process died (exit 1) during GET /p"
    )
