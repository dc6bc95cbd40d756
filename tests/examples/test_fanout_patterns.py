"""The three patterns and the anti-pattern, written as a user of the plugin would.

The `fanout` fixture runs the reference app (app.main:app) and the stub
upstream (100 ms per call) in real processes; counts are exact, the one
timing check is a ratio from the same test with a wide margin.
"""

import pytest

N = 20
BOUND = 5


def test_sync_calls_one_at_a_time(fanout):
    m = fanout.measure(f"/sync/{N}", repeat=1, warmup=0)
    fanout.assert_concurrency(m, peak=1, requests=N)


def test_async_puts_all_calls_in_flight(fanout):
    m = fanout.measure(f"/async/{N}", repeat=3)
    fanout.assert_concurrency(m, peak=N, requests=N)


def test_semaphore_holds_its_bound_exactly(fanout):
    m = fanout.measure(f"/async_sem/{N}/{BOUND}", repeat=2)
    fanout.assert_concurrency(m, peak=BOUND, requests=N)


def test_async_is_at_least_5x_faster_than_sync(fanout):
    slow = fanout.measure(f"/sync/{N}", repeat=1, warmup=0)
    fast = fanout.measure(f"/async/{N}", repeat=3)
    fanout.assert_speedup(fast, slow, at_least=5)


def test_async_does_not_block_the_loop(fanout):
    m = fanout.measure(f"/async/{N}", repeat=3)
    fanout.assert_no_blocking(m)


def test_blocking_anti_pattern_is_flagged(fanout):
    m = fanout.measure(f"/blocking/{N}", repeat=1, warmup=0)
    assert m.loop_lag_max_s >= 0.1 * 0.9  # at least one whole upstream delay
    with pytest.raises(AssertionError, match="event loop was held"):
        fanout.assert_no_blocking(m)
