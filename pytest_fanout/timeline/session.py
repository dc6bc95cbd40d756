"""The glue between a stack and the timeline: a waterfall of a Measurement's sample, and
the request senders the experiments (critical path, independence) repeat."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx2

from pytest_fanout.measure import check_status, send_request
from pytest_fanout.measurement import Measurement, Request, has_rate_limit
from pytest_fanout.timeline.calls import request_timeline
from pytest_fanout.timeline.causal import CriticalPath, Progress, Send, critical_path
from pytest_fanout.timeline.findings import TimelineFinding, tested_findings
from pytest_fanout.timeline.waterfall import Waterfall, WaterfallError


def median_sample(m: Measurement) -> int:
    """The index of the sample whose time is the median (the lower one for an even count)."""
    order = sorted(range(len(m.samples)), key=lambda i: m.samples[i])
    return order[(len(order) - 1) // 2]


def waterfall_of(
    m: Measurement, upstreams: Mapping[str, Any], sample: int | None = None
) -> Waterfall:
    """The waterfall of one sample of `m` (the median one by default), from the stubs'
    call logs: call it while the stack still runs, before the logs roll over."""
    if not m.sample_windows:
        raise WaterfallError(
            f"{m.method} {m.path}: this measurement has no sample windows (taken by a "
            "sampler that does not record them, or loaded from an older run)"
        )
    count = len(m.sample_windows)
    index = median_sample(m) if sample is None else sample
    if not -count <= index < count:
        raise WaterfallError(f"sample={sample} is out of range: the measurement has {count}")
    index %= count
    sent, answered = m.sample_windows[index]
    timeline = request_timeline(upstreams, m.method, m.path, sent, answered)
    which = "the median" if sample is None else f"sample {index + 1} of {count}"
    return Waterfall(timeline, title=f"{m.method} {m.path} ({which})")


def make_sender(client: httpx2.Client, app: Any, base_url: str, request: Request) -> Send:
    """A function that sends `request` once and returns (sent, answered) on
    time.monotonic(); a wrong status is a MeasurementError."""

    def send() -> tuple[float, float]:
        __tracebackhide__ = True
        sent = time.monotonic()
        response = send_request(client, app, base_url, request)
        answered = time.monotonic()
        check_status(response, request)
        return sent, answered

    return send


def refilling(send: Send, upstreams: Mapping[str, Any]) -> Send:
    """`send`, each time after every rate-limited stub's bucket is full again (its gauge
    reset), as each timed sample of `measure` starts: the runs alike, and a run's 429s the
    request's own, not what the run before it left of the bucket."""
    limited = [stub for stub in upstreams.values() if has_rate_limit(stub.stats().get("limits"))]
    if not limited:
        return send

    def refilled() -> tuple[float, float]:
        __tracebackhide__ = True
        for stub in limited:
            stub.reset()
        return send()

    return refilled


def run_critical_path(
    client: httpx2.Client,
    app: Any,
    upstreams: Mapping[str, Any],
    request: Request,
    *,
    budget_s: float = 20.0,
    extra_ms: float | None = None,
    record: Measurement | None = None,
    progress: Progress | None = None,
) -> CriticalPath:
    """`fanout.critical_path`: the experiment on the stack's app; with `record`, the
    weights (and the unchanged request's waterfall) kept in that Measurement."""
    send = refilling(make_sender(client, app, app.url, request), upstreams)
    result = critical_path(
        send,
        upstreams,
        method=request.method,
        path=request.path,
        budget_s=budget_s,
        extra_ms=extra_ms,
        progress=progress,
    )
    if record is not None:
        record.critical_path = result.to_dict()
        if record.timeline is None and result.timeline is not None:
            record.timeline = Waterfall(result.timeline).to_dict()
    return result


def run_findings(
    client: httpx2.Client, app: Any, upstreams: Mapping[str, Any], request: Request
) -> list[TimelineFinding]:
    """`fanout.timeline_findings`: one warm-up, one request drawn, each sequential pair
    tested (`findings.independence`)."""
    send = make_sender(client, app, app.url, request)
    send()  # warm-up
    sent, answered = send()
    timeline = request_timeline(upstreams, request.method, request.path, sent, answered)
    return tested_findings(send, upstreams, Waterfall(timeline))
