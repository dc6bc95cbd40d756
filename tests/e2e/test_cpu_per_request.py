"""The app's CPU per request does not grow with the upstream's delay: the probe's own CPU (its
watchdog thread, its lag ticks, ~25 ms a second of wall time here) is taken off. Before, the
reference /async/10 read 3.2 ms at a 20 ms delay and about 30 ms at 1 s, and the gate's cpu
rule judged 5% of that: +1 ms of CPU was a regression at 20 ms and 'same' at 1 s."""

from __future__ import annotations

import statistics

import httpx2

from pytest_fanout.limits import CPU_METHOD, Behaviour
from pytest_fanout.measure import measure
from pytest_fanout.measurement import Request
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import Stack


def _cpu_per_request(delay_ms: int) -> tuple[float, float]:
    """(the app's CPU per request, the probe's), medians of 3 samples of /async/10."""
    with (
        Stack(behaviour=Behaviour(delay_ms=delay_ms)) as stack,
        httpx2.Client(timeout=30, verify=tls_context()) as client,
    ):
        m = measure(
            client,
            stack.app.url,
            Request("/async/10"),
            repeat=3,
            warmup=1,
            app=stack.app,
            upstreams=stack.upstreams,
        )
    assert m.upstream_requests == 10
    assert m.cpu_method == CPU_METHOD  # saved with the run: the gate compares one method
    return statistics.median(m.app_cpu_per_sample), statistics.median(m.probe_cpu_per_sample)


def test_the_app_cpu_per_request_does_not_grow_with_the_delay() -> None:
    short, _ = _cpu_per_request(20)
    long, probe = _cpu_per_request(1000)
    # The same ten calls: 2-4 ms at either delay (it was x10 at 1 s). The probe spent more than
    # the app in that second, and it is not in the app's figure.
    assert long < 3 * short, (short, long)
    assert probe > long, (probe, long)
