"""Calls one at a time: an awaited loop, calls spaced out by something else (a rate limiter),
or a blocked loop, told apart from the samples' wall time, the stubs' applied delays and the
app's CPU (diagnosis.paced_wait_s), on constructed Measurements."""

from __future__ import annotations

from pytest_fanout.diagnosis import diagnose, paced_wait_s
from pytest_fanout.measurement import Measurement


def make(
    wall_s: float,
    *,
    delay_ms: float = 80.0,
    cpu_s: float | None = 0.01,
    limit: dict | None = None,
    rejected: int = 0,
) -> Measurement:
    samples = 3
    return Measurement(
        path="/weather",
        samples=[wall_s] * samples,
        upstream_requests_per_sample=[4] * samples,
        upstream_peak_per_sample=[1] * samples,
        loop_lag_per_sample=[0.004] * samples,
        app_cpu_per_sample=[] if cpu_s is None else [cpu_s] * samples,
        upstream_delay_s=0.02,
        upstream_gauges={
            "default": {
                "requests": [4] * samples,
                "peak_inflight": [1] * samples,
                "connections": [0] * samples,
                "rejected": [rejected] * samples,
                "limited": [rejected] * samples,
                "capped": [0] * samples,
                "errors": [0] * samples,
                "delay_ms_sum": [delay_ms] * samples,
            }
        },
        upstream_limits={"default": limit or {}},
        structure={"default": [1, 1, 1, 1]},
        structure_routes={"default": ["GET /item/{i}"] * 4},
        sample_windows=[(float(i), float(i) + wall_s) for i in range(samples)],
        warmup=1,
    )


def words(m: Measurement) -> str:
    (finding,) = [f for f in diagnose(m) if f.kind == "sequential"]
    return finding.message


def test_a_loop_that_waits_only_for_answers_is_told_to_gather() -> None:
    m = make(0.1)  # 80 ms of delays, 10 ms of CPU: nothing else
    assert paced_wait_s(m) is None
    assert "gather them" in words(m)


def test_calls_spaced_out_by_something_else_are_named_so() -> None:
    m = make(0.7)  # 80 ms of delays, 10 ms of CPU, 610 ms of waiting on something else
    assert paced_wait_s(m) == 0.7 - 0.08 - 0.01
    assert "spaced out: each request spent 610 ms or more" in words(m)
    assert "gather them" not in words(m)


def test_a_wait_shorter_than_the_delays_is_not_pacing() -> None:
    assert paced_wait_s(make(0.16)) is None  # 70 ms else, under the 80 ms of delays
    assert paced_wait_s(make(0.24)) is None  # 150 ms: under twice the delays (a busy CPU?)
    assert paced_wait_s(make(0.05, delay_ms=10.0)) is None  # 30 ms else: under 50 ms
    assert paced_wait_s(make(0.1, delay_ms=10.0)) is not None  # 80 ms else


def test_without_the_apps_cpu_nothing_is_inferred() -> None:
    assert paced_wait_s(make(0.7, cpu_s=None)) is None


def test_paced_within_a_declared_limit_is_no_finding_and_past_it_still_is() -> None:
    within = make(0.7, limit={"rate_limit": "6/s", "per_s": 6.0, "burst": 2})
    assert diagnose(within) == []  # 4 calls in 0.7 s: 5.7/s of 6/s, no 429
    slow = make(2.0, limit={"rate_limit": "6/s", "per_s": 6.0, "burst": 2})
    assert "spaced out" in words(slow)  # 2/s where 6/s is allowed: slower than it must be
    refused = make(0.7, limit={"rate_limit": "6/s", "per_s": 6.0, "burst": 2}, rejected=1)
    assert "sequential" in [f.kind for f in diagnose(refused)]


def slow(cpu_s: float) -> Measurement:
    """Held waves [2, 1] (a limiter let 2 go at the probe), a timed peak of 1, 20 ms delay."""
    m = make(0.1, cpu_s=cpu_s)
    m.structure = {"default": [2, 1]}
    m.upstream_gauges["default"]["requests"] = [3, 3, 3]
    m.upstream_gauges["default"]["peak_inflight"] = [1, 1, 1]
    return m


def test_a_lower_timed_peak_the_cpu_cannot_explain_is_no_slow_client() -> None:
    # Found on an aiohttp order service: an AsyncLimiter's pace, carried over between
    # requests, let 2 go in the held probe and 1 at a time in the timed samples; "slow
    # client ... issuing 2 takes about 7 ms: at a delay above that the timed peak would reach
    # 2" at a 50 ms delay.
    cheap = slow(cpu_s=0.003)  # 1 ms a call, 2 ms to issue 2, against a 20 ms delay
    assert "slow-client" not in [f.kind for f in diagnose(cheap)]
    costly = slow(cpu_s=0.03)  # 10 ms a call, 20 ms to issue 2: the CPU explains it
    (finding,) = [f for f in diagnose(costly) if f.kind == "slow-client"]
    assert "so issuing 2 takes about 20 ms" in finding.message
    unknown = slow(cpu_s=None)  # no CPU reading: nothing ruled out, as before
    assert "slow-client" in [f.kind for f in diagnose(unknown)]


def pooled(waves: list[int], routes: list[str]) -> Measurement:
    m = make(0.25)
    m.structure = {"default": waves}
    m.structure_routes = {"default": routes}
    calls = sum(waves)
    m.upstream_gauges["default"]["requests"] = [calls] * 3
    m.upstream_gauges["default"]["peak_inflight"] = [max(waves)] * 3
    return m


def test_a_wave_of_the_default_pool_spilling_the_same_calls_is_a_pool_cap_without_n() -> None:
    users = ["GET /users/{u}", "GET /users/{u}/repos"] * 60
    (cap,) = [f for f in diagnose(pooled([100, 20], users)) if f.kind == "pool-cap"]
    assert cap.exact and "120 calls of GET /users/{u}, GET /users/{u}/repos in 2 rounds" in (
        cap.message
    )
    # Then a dependent stage of other calls: only the spilled ones count.
    staged = pooled([100, 20, 30], users + ["GET /commits/{c}"] * 30)
    (cap,) = [f for f in diagnose(staged) if f.kind == "pool-cap"]
    assert "120 calls of" in cap.message


def test_no_pool_cap_without_n_for_other_sizes_or_other_calls() -> None:
    assert "pool-cap" not in kinds_of(pooled([99, 21], ["GET /a/{i}"] * 120))
    assert "pool-cap" not in kinds_of(pooled([120], ["GET /a/{i}"] * 120))
    two_stages = ["GET /a/{i}"] * 100 + ["GET /b/{i}"] * 20  # the second needs the first
    assert "pool-cap" not in kinds_of(pooled([100, 20], two_stages))


def kinds_of(m: Measurement) -> list[str]:
    return [f.kind for f in diagnose(m)]
