"""The performance suite the pull-request gate runs: each fan-out pattern, measured as a user would.

Run it with the gate:

    pytest benchmarks/perf -p no:randomly --fanout-save=perf.json --fanout-compare=baseline.json

Every `fanout.measure(...)` is one case of the gate (test node id + path).
Assertions here are the exact ones (requests seen, peak in flight) and a
speedup with a wide margin: timing goals are the gate's job, judged against
the baseline with its statistics, not with a fixed number in a test.
"""

from __future__ import annotations

import pytest

#: Enough samples for the gate's rank test to tell a shift from noise (5 a side is the least).
REPEAT = 10
#: The CPU cases take twice as many: a 13-15% shift in CPU per request against a few percent
#: of noise needs about 20 a side to reach p < 0.01 every time (10 a side missed 1 in 10).
CPU_REPEAT = 20

# 100 ms upstream delay: long next to the client's ~1 ms per call, so that a few ms of
# scheduling noise between runs stays a small fraction of the ideal time.
pytestmark = pytest.mark.fanout_upstream(delay_ms=100)


def test_gather_all(fanout):
    m = fanout.measure("/async/20", repeat=REPEAT)
    fanout.assert_concurrency(m, 20, requests=20)


def test_gather_bounded(fanout):
    m = fanout.measure("/async_sem/20/5", repeat=REPEAT)
    fanout.assert_concurrency(m, 5, requests=20)


def test_wide_gather(fanout):
    m = fanout.measure("/async/50", repeat=REPEAT)
    fanout.assert_concurrency(m, requests=50)


@pytest.mark.parametrize("n", [200, 400])
def test_cpu_per_call(fanout, n):
    # Wide fan-outs: the app's CPU per request is mostly its per-call cost (0.13-0.23 ms a
    # call on the VMs measured, fixed costs amortised), so 20 us more per call moves it by
    # 7-15%: what the A/B mode's cpu+5% rule is for, with 20 samples a side.
    m = fanout.measure(f"/async/{n}", repeat=CPU_REPEAT)
    fanout.assert_concurrency(m, requests=n)


def test_async_beats_sequential(fanout):
    # Both in one test: the gate's "speedup" metric is sync median / async median, same run.
    sequential = fanout.measure("/sync/5", repeat=REPEAT)
    gathered = fanout.measure("/async/5", repeat=REPEAT)
    fanout.assert_concurrency(gathered, 5, requests=5)
    fanout.assert_speedup(gathered, sequential, at_least=3)
