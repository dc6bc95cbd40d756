"""The first-byte rule judges only answers the app streamed, and there catches a later first
token even when the total time stays (made-up samples: no server, no clock)."""

from __future__ import annotations

import random

from pytest_fanout.gate import DEFAULT_FAIL_ON, GateConfig, Run, compare_runs
from pytest_fanout.measurement import Measurement

FP = {"cpu_model": "test CPU", "cores": 2, "python": "3.11", "os": "Linux", "package": "0"}
OTHER = {**FP, "cpu_model": "another CPU"}


def around(value: float, seed: int, k: int = 10) -> list[float]:
    rng = random.Random(seed)
    return [value + rng.uniform(-0.002, 0.002) for _ in range(k)]


def stream(first_s: float, last_s: float, seed: int, streamed: bool = True) -> Measurement:
    return Measurement(
        path="/chat",
        method="POST",
        samples=around(last_s, seed),
        first_byte_per_sample=around(first_s, seed + 100),
        streamed=streamed,
        test="test_chat.py::test_chat",
    )


def judge(base: Measurement, now: Measurement, fingerprint: dict = FP):
    comparison = compare_runs(
        Run.from_measurements([base], {"fingerprint": FP}),
        Run.from_measurements([now], {"fingerprint": fingerprint}),
        GateConfig.from_options(DEFAULT_FAIL_ON),
    )
    [case] = comparison.verdicts
    return case


def rows(case) -> dict[str, object]:
    return {c.rule.metric.name: c for c in case.changes}


def test_a_later_first_token_is_a_regression_though_the_total_stays() -> None:
    case = judge(stream(0.050, 0.300, seed=1), stream(0.150, 0.300, seed=2))
    assert case.verdict == "regression"
    first = rows(case)["first-byte"]
    assert first.regressed and not rows(case)["median"].regressed
    assert first.change > 1.5  # 50 ms -> 150 ms


def test_an_unchanged_stream_is_same_with_its_first_byte_gated() -> None:
    case = judge(stream(0.050, 0.300, seed=1), stream(0.050, 0.300, seed=2))
    assert case.verdict == "same"
    assert rows(case)["first-byte"].gated


def test_an_answer_not_streamed_has_no_first_byte_row_and_no_note_about_it() -> None:
    case = judge(
        stream(0.050, 0.300, seed=1, streamed=False), stream(0.150, 0.300, seed=2, streamed=False)
    )
    assert "first-byte" not in rows(case)
    assert "first-byte" not in case.note
    assert case.verdict == "same"


def test_a_stream_that_became_a_plain_answer_says_first_byte_was_not_compared() -> None:
    case = judge(stream(0.050, 0.300, seed=1), stream(0.300, 0.300, seed=2, streamed=False))
    assert "first-byte" not in rows(case)
    assert "first-byte needs a streamed answer on both sides" in case.note


def test_first_byte_is_machine_bound() -> None:
    case = judge(stream(0.050, 0.300, seed=1), stream(0.150, 0.300, seed=2), fingerprint=OTHER)
    assert "first-byte" not in rows(case)
    assert "first-byte" in case.note and "the machine differs" in case.note
