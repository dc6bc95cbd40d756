"""Assertions on Measurements, with messages that say what was expected, what was seen,
and what it means. Pure functions: the `fanout` fixture delegates to them."""

from __future__ import annotations

from pytest_fanout.measure import Measurement
from pytest_fanout.servers.callstacks import blocking_line

#: Never flag less loop lag than this: scheduling noise on a busy 2-core machine.
MIN_LAG_LIMIT_S = 0.05


class FanoutAssertionError(AssertionError):
    """A fan-out property did not hold."""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def assert_speedup(fast: Measurement, slow: Measurement, at_least: float) -> float:
    """`fast`'s median must be at least `at_least` times below `slow`'s; returns the ratio."""
    __tracebackhide__ = True
    ratio = slow.median_s / fast.median_s if fast.median_s else float("inf")
    if ratio < at_least:
        meaning = (
            "the two ran at the same speed: the fast path is not concurrent"
            if ratio < 1.5
            else "the fast path overlaps its calls only partly"
        )
        raise FanoutAssertionError(
            f"expected {fast.path} to be at least {at_least:g}x faster than {slow.path}, "
            f"it was {ratio:.2f}x (median {_ms(fast.median_s)} vs {_ms(slow.median_s)}): "
            f"{meaning}"
        )
    return ratio


def _peak_meaning(expected: int, seen: int) -> str:
    if seen == 1:
        return "the calls ran one at a time"
    if seen < expected:
        return "fewer calls overlapped than expected: a pool limit or a semaphore caps them"
    return "more calls overlapped than expected: the bound is not enforced"


def _where(m: Measurement, upstream: str | None) -> str:
    if upstream is None or (
        m.upstream_names and upstream == m.upstream_names[0] and len(m.upstream_names) == 1
    ):
        return "the upstream"
    return f"upstream {upstream!r}"


def assert_concurrency(
    m: Measurement,
    peak: int | None = None,
    *,
    at_most: int | None = None,
    requests: int | None = None,
    upstream: str | None = None,
) -> None:
    """Exact counts at an upstream (the default one, or `upstream`), in every sample:
    the peak in flight, a bound, the total."""
    __tracebackhide__ = True
    if peak is None and at_most is None and requests is None:
        raise TypeError("assert_concurrency needs peak=, at_most= or requests=")
    if upstream is None:
        peaks, counts = m.upstream_peak_per_sample, m.upstream_requests_per_sample
    else:
        gauges = m.upstream(upstream)
        peaks, counts = gauges.peak_per_sample, gauges.requests_per_sample
    where = _where(m, upstream)
    label = f"{m.method} {m.path}" if m.method != "GET" else m.path
    if peak is not None:
        wrong = [p for p in peaks if p != peak]
        if wrong:
            seen = wrong[0]
            detail = f" (per sample: {peaks})" if len(set(peaks)) > 1 else ""
            raise FanoutAssertionError(
                f"expected {peak} requests in flight at {where} during {label}, "
                f"saw {seen}{detail}: {_peak_meaning(peak, seen)}"
                + _finding_suffix(m, "blocks-loop", "sequential", "pool-cap", "upstream-429")
            )
    most = max(peaks, default=0)
    if at_most is not None and most > at_most:
        raise FanoutAssertionError(
            f"expected at most {at_most} requests in flight at {where} during {label}, "
            f"saw {most}: the bound is not enforced"
        )
    if requests is not None:
        wrong = [c for c in counts if c != requests]
        if wrong:
            seen = wrong[0]
            meaning = (
                "some calls were never made (a deadline, or a short-circuit)"
                if seen < requests
                else "calls were repeated (retries, or a second fan-out)"
            )
            raise FanoutAssertionError(
                f"expected {where} to see {requests} requests per call of {label}, "
                f"saw {seen}: {meaning}"
            )


def _finding_suffix(m: Measurement, *kinds: str) -> str:
    """`; <the diagnosis>` when `diagnose` has a finding of one of `kinds`, else ''."""
    from pytest_fanout.diagnose import finding_for  # diagnose imports this module

    finding = finding_for(m, *kinds)
    return f"; {finding.message}" if finding is not None else ""


#: httpx's default number of idle connections kept per client (httpx.Limits).
HTTPX_DEFAULT_KEEPALIVE = 20


def assert_connection_reuse(m: Measurement, at_most: int = 0, upstream: str | None = None) -> None:
    """At most `at_most` new TCP connections in any sample after warm-up, at every upstream
    summed or at the one named. The message tells a client built per request (no
    connection reused at all) from a pool that keeps fewer idle connections than the
    fan-out needs."""
    __tracebackhide__ = True
    if upstream is None:
        opened = m.connections_per_sample
        names = m.upstream_names
        calls = (
            [
                sum(col)
                for col in zip(*(m.upstream(n).requests_per_sample for n in names), strict=True)
            ]
            if names
            else []
        )
    else:
        gauges = m.upstream(upstream)
        opened, calls = gauges.connections_per_sample, gauges.requests_per_sample
    if not opened:
        raise FanoutAssertionError(
            f"no connection counts for {m.path}: measure through the `fanout` fixture"
        )
    worst = max(range(len(opened)), key=lambda i: opened[i])
    new, made = opened[worst], calls[worst]
    if new <= at_most:
        return
    where = "" if upstream is None else f" at upstream {upstream!r}"
    label = f"{m.method} {m.path}" if m.method != "GET" else m.path
    if new >= made:
        meaning = (
            f"every one of the {made} calls arrived on a new connection{where}: no connection "
            "was reused (a client built per request?)"
        )
    else:
        meaning = (
            f"{new} new connections for {made} calls{where}: the client keeps fewer idle "
            f"connections than the fan-out needs (httpx keeps {HTTPX_DEFAULT_KEEPALIVE} "
            "by default)"
        )
    raise FanoutAssertionError(
        f"expected at most {at_most} new connections per call of {label} after warm-up: {meaning}"
        + _finding_suffix(m, "no-connection-reuse", "connection-churn")
    )


def lag_limit(m: Measurement) -> float:
    """Half the upstream delay, never under MIN_LAG_LIMIT_S: a blocking call holds the
    loop for a whole delay, a healthy loop for a few milliseconds."""
    delay = m.upstream_delay_s or 0.0
    return max(MIN_LAG_LIMIT_S, delay / 2)


def assert_no_blocking(m: Measurement, max_lag_s: float | None = None) -> None:
    """The app's event loop never stalled longer than `max_lag_s` while serving `m`."""
    __tracebackhide__ = True
    if not m.loop_lag_per_sample:
        raise FanoutAssertionError(
            f"no loop-probe data for {m.path}: measure through the `fanout` fixture"
        )
    limit = lag_limit(m) if max_lag_s is None else max_lag_s
    if m.loop_lag_max_s > limit:
        where = blocking_line(m.stalls)
        raise FanoutAssertionError(
            f"the app's event loop stalled for {_ms(m.loop_lag_max_s)} during {m.path} "
            f"(limit {_ms(limit)}): "
            + (
                f"something blocks the loop at {where}"
                if where
                else "something blocks the loop, such as a sync call inside `async def`"
            )
        )


def assert_streams(m: Measurement, first_byte_within: float = 0.5) -> None:
    """The answer streams: in every sample its first byte came within `first_byte_within`
    of the time to its last byte (a ratio from the same sample, so a noisy machine moves
    both). An app that reads a whole upstream stream before answering fails it."""
    __tracebackhide__ = True
    if not 0 < first_byte_within < 1:
        raise ValueError(f"first_byte_within must be between 0 and 1, got {first_byte_within!r}")
    if not m.first_byte_per_sample:
        raise FanoutAssertionError(
            f"no first-byte times for {m.path}: measure through the `fanout` fixture"
        )
    label = f"{m.method} {m.path}" if m.method != "GET" else m.path
    pairs = list(zip(m.first_byte_per_sample, m.samples, strict=True))
    for index, (first, last) in enumerate(pairs, 1):
        if last and first / last > first_byte_within:
            raise FanoutAssertionError(
                f"expected the first byte of {label} within {first_byte_within:.0%} of the "
                f"answer's time in every sample: sample {index} sent it at {_ms(first)} of "
                f"{_ms(last)} ({first / last:.0%}): the answer is buffered, not streamed "
                "(an upstream stream read to the end before answering?)"
            )
