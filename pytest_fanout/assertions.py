"""Assertions on Measurements, with messages that say what was expected, what was seen,
and what it means. Pure functions: the `fanout` fixture delegates to them.

Counts of calls in flight are checked on the request's structure, the held
probe's waves (exact on any machine, at any load); the timed peaks are shown
beside them, and stand in only for a Measurement without a held probe.
"""

from __future__ import annotations

from pytest_fanout.diagnosis import LIMIT_KNOBS, finding_for, where_blocked
from pytest_fanout.measurement import Measurement, UpstreamGauges


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


def _structure_meaning(expected: int, waves: list[int]) -> str:
    seen = max(waves, default=0)
    if seen == 1 and len(waves) > 1:
        return "the calls ran one at a time: each was awaited before the next"
    if seen < expected:
        return f"a limit of {seen} caps them ({LIMIT_KNOBS})"
    return "more calls were in flight at once than expected: the bound is not enforced"


def _timed_meaning(expected: int, seen: int) -> str:
    if seen > expected:
        return "more calls overlapped than expected: the bound is not enforced"
    # Without the held probe a low timed peak has two causes the timing cannot tell apart.
    return (
        "fewer calls overlapped than expected at the configured delay: a limit, or a client "
        "slower to issue calls than the upstream answers (no held probe to tell them apart)"
    )


def _where(m: Measurement, upstream: str | None) -> str:
    if len(m.upstream_names) <= 1:
        return "the upstream"
    return f"upstream {upstream or m.upstream_names[0]!r}"


def assert_concurrency(
    m: Measurement,
    peak: int | None = None,
    *,
    at_most: int | None = None,
    requests: int | None = None,
    waves: list[int] | None = None,
    upstream: str | None = None,
) -> None:
    """Exact counts at an upstream (the default one, or `upstream`): the most calls the code
    puts in flight at once (`peak`, `at_most`), the calls per request (`requests`), and
    the held probe's wave sizes (`waves`, e.g. `[7, 7, 7, 7, 7, 5]`)."""
    __tracebackhide__ = True
    if peak is None and at_most is None and requests is None and waves is None:
        raise TypeError("assert_concurrency needs peak=, at_most=, requests= or waves=")
    if upstream is None:
        peaks, counts = m.upstream_peak_per_sample, m.upstream_requests_per_sample
    else:
        gauges = m.upstream(upstream)
        peaks, counts = gauges.peak_per_sample, gauges.requests_per_sample
    held = m.waves(upstream)
    where = _where(m, upstream)
    label = f"{m.method} {m.path}" if m.method != "GET" else m.path
    timed = _timed_note(m, peaks)
    if waves is not None and held is None:
        raise FanoutAssertionError(
            f"no held probe in the measurement of {label}: waves= needs one (measure with "
            "held_probe=True, the default)"
        )
    if waves is not None and held != list(waves):
        raise FanoutAssertionError(
            f"expected waves {list(waves)} at {where} during {label}, the held probe saw "
            f"{held}{timed}"
            + _finding_suffix(
                m, "sequential", "pool-cap", "rate-exceeded", "upstream-429", "slow-client"
            )
        )
    if peak is not None:
        if held is not None and max(held, default=0) != peak:
            raise FanoutAssertionError(
                f"expected {peak} calls in flight at once at {where} during {label}, the "
                f"held probe saw at most {max(held, default=0)} (waves {held}){timed}: "
                f"{_structure_meaning(peak, held)}"
                + _finding_suffix(
                    m, "sequential", "pool-cap", "rate-exceeded", "upstream-429", "blocks-loop"
                )
            )
        wrong = [p for p in peaks if p != peak]
        if held is None and wrong:
            seen = wrong[0]
            detail = f" (per sample: {peaks})" if len(set(peaks)) > 1 else ""
            raise FanoutAssertionError(
                f"expected {peak} requests in flight at {where} during {label}, "
                f"saw {seen}{detail} (timed): {_timed_meaning(peak, seen)}"
                + _finding_suffix(
                    m, "sequential", "pool-cap", "rate-exceeded", "upstream-429", "blocks-loop"
                )
            )
    if at_most is not None:
        most = max([*peaks, *(held or [])], default=0)
        if most > at_most:
            source = f"the held probe's waves {held}" if held else "the timed samples"
            raise FanoutAssertionError(
                f"expected at most {at_most} requests in flight at {where} during {label}, "
                f"saw {most} ({source}): the bound is not enforced"
            )
    if requests is not None:
        wrong = [c for c in counts if c != requests]
        if held is not None and sum(held) != requests and not _rejected(m, upstream):
            wrong.insert(0, sum(held))
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


def _rejected(m: Measurement, upstream: str | None) -> bool:
    """Calls answered 429 at once are in the request count but in no wave."""
    return bool(m.upstream_gauges) and m.upstream(upstream).rejected > 0


def _timed_note(m: Measurement, peaks: list[int]) -> str:
    if not peaks:
        return ""
    delay = m.upstream_delay_s
    at = f" at the {delay * 1000:.0f} ms delay" if delay is not None else ""
    return f"; the timed samples{at} reached {max(peaks)}"


def _finding_suffix(m: Measurement, *kinds: str) -> str:
    """`; <the diagnosis>` when `diagnose` has a finding of one of `kinds`, else ''."""
    finding = finding_for(m, *kinds)
    return f"; {finding.message}" if finding is not None else ""


#: httpx's default number of idle connections kept per client (httpx.Limits).
HTTPX_DEFAULT_KEEPALIVE = 20


def assert_connection_reuse(m: Measurement, at_most: int = 0, upstream: str | None = None) -> None:
    """At most `at_most` new TCP connections in any sample after warm-up, at every upstream
    summed or at the one named. The message says, upstream by upstream, what the counts
    show: no connection reused at all (a client built per request), connections reused only
    within the request that opened them (the same), or new connections that outlive it (a
    keep-alive pool smaller than the fan-out)."""
    __tracebackhide__ = True
    if upstream is None:
        opened, names = m.connections_per_sample, m.upstream_names
    else:
        opened, names = m.upstream(upstream).connections_per_sample, [upstream]
    if not opened:
        raise FanoutAssertionError(
            f"no connection counts for {m.path}: measure through the `fanout` fixture"
        )
    worst = max(range(len(opened)), key=lambda i: opened[i])
    if opened[worst] <= at_most:
        return
    label = f"{m.method} {m.path}" if m.method != "GET" else m.path
    named = upstream is not None or len(names) > 1
    meanings = [
        meaning for name in names if (meaning := _reuse_meaning(m.upstream(name), worst, named))
    ]
    meaning = "; ".join(meanings) or f"{opened[worst]} new connections in a sample"
    raise FanoutAssertionError(
        f"expected at most {at_most} new connections per call of {label} after warm-up: {meaning}"
        + _finding_suffix(m, "no-connection-reuse", "connection-churn")
    )


def _reuse_meaning(g: UpstreamGauges, sample: int, named: bool) -> str:
    """What one upstream's connection counts in `sample` show, or '' when it opened none."""
    if sample >= len(g.connections_per_sample) or sample >= len(g.requests_per_sample):
        return ""
    new, made = g.connections_per_sample[sample], g.requests_per_sample[sample]
    if not new:
        return ""
    at = f" at upstream {g.name!r}" if named else ""
    if new >= made:
        calls = "the one call" if made == 1 else f"every one of the {made} calls"
        return (
            f"{calls}{at} arrived on a new connection: no connection was reused (a client "
            "built per request?)"
        )
    counts = f"{new} new connections for {made} calls{at}"
    closed = g.closed_per_sample[sample] if sample < len(g.closed_per_sample) else None
    if closed is None:
        return (
            f"{counts}: a client built per request that reuses within the request, or a "
            "client that keeps fewer idle connections than the fan-out needs (this "
            "measurement has no connection lifetimes to tell them apart)"
        )
    if closed >= new:
        return (
            f"{counts}, every one closed by the end of the request: reused only within the "
            "request (a client built per request?)"
        )
    return (
        f"{counts}, outliving the request: the client keeps fewer idle connections than the "
        f"fan-out needs (httpx keeps {HTTPX_DEFAULT_KEEPALIVE} by default)"
    )


def assert_no_blocking(m: Measurement, max_lag_s: float | None = None) -> None:
    """The app's own code never held its event loop longer than `max_lag_s` (default
    `m.lag_limit_s`, 40 ms) while serving `m`: the longest stall, less its garbage
    collection and the time the loop waited for a CPU (a loaded runner's, not the code's)."""
    __tracebackhide__ = True
    if not m.loop_lag_per_sample:
        raise FanoutAssertionError(
            f"no loop-probe data for {m.path}: measure through the `fanout` fixture"
        )
    limit = m.lag_limit_s if max_lag_s is None else max_lag_s
    held = m.blocking_lag_s
    if held > limit:
        where = where_blocked(m)
        if where and m.stalls:
            longest = max(stall.get("duration_s", 0.0) for stall in m.stalls)
            where += f" (longest stall {_ms(longest)})"
        raise FanoutAssertionError(
            f"the app's event loop was held for {_ms(held)} during {m.path} "
            f"(limit {_ms(limit)}): "
            + (
                f"something blocks the loop at {where}"
                if where
                else "something blocks the loop, such as a sync call inside `async def`"
            )
            + _finding_suffix(m, "gc-pauses")
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


def _late_upstreams(m: Measurement, upstream: str | None, key: str) -> list[UpstreamGauges]:
    """The upstreams to judge (all, or the one named) that measured `key`; an error line
    when none did."""
    names = m.upstream_names if upstream is None else [upstream]
    gauges = [m.upstream(name) for name in names]
    measured = [g for g in gauges if getattr(g, key + "_per_sample")]
    if not measured:
        how = (
            "measure it with disconnect_after_s= (a hang-up)"
            if key == "after_disconnect"
            else "measure it through the `fanout` fixture, without a hang-up"
        )
        raise FanoutAssertionError(f"no {key.replace('_', ' ')} counts for {m.path}: {how}")
    return measured


def _calls(count: int) -> str:
    return "1 call" if count == 1 else f"{count} calls"


def assert_no_orphans(m: Measurement, upstream: str | None = None) -> None:
    """No upstream call (at every upstream, or at the one named) was still in flight when
    the endpoint answered, nor begun after: `asyncio.gather` without `return_exceptions`
    answers on the first failure and leaves the other calls running for nobody."""
    __tracebackhide__ = True
    label = f"{m.method} {m.path}"
    for g in _late_upstreams(m, upstream, "orphaned"):
        if g.orphaned:
            samples = len(g.orphaned_per_sample)
            per = f" ({g.orphaned_per_sample} over {samples} samples)" if samples > 1 else ""
            raise FanoutAssertionError(
                f"{_calls(g.orphaned)} to {g.name!r} ran on after {label} answered "
                f"{m.status_code}{per}: asyncio.gather does not cancel the other calls when "
                "one fails; use asyncio.TaskGroup, or cancel them"
            )


def assert_cancels_on_disconnect(m: Measurement, upstream: str | None = None) -> None:
    """No upstream call was still running `m.disconnect_grace_s` after the caller hung up,
    nor begun after: an endpoint that keeps calling for a caller who left wastes every
    one of those calls (Starlette runs an ordinary endpoint to its end)."""
    __tracebackhide__ = True
    label = f"{m.method} {m.path}"
    for g in _late_upstreams(m, upstream, "after_disconnect"):
        if g.after_disconnect:
            after = _ms(m.disconnect_after_s or 0.0)
            grace = _ms(m.disconnect_grace_s or 0.0)
            counts, samples = g.after_disconnect_per_sample, len(g.after_disconnect_per_sample)
            per = f" ({counts} over {samples} samples)" if samples > 1 else ""
            raise FanoutAssertionError(
                f"{_calls(g.after_disconnect)} to {g.name!r} ran on after the caller hung up "
                f"on {label} at {after} (still running {grace} later, or begun after){per}: "
                "the upstream kept working for nobody; watch for the disconnect (await "
                "request.is_disconnected(), or receive() giving http.disconnect) and cancel "
                "the calls so that their connections close: an upstream stops only when it "
                "sees its connection go (a call cancelled with its connection left open, as can "
                "happen in a StreamingResponse's body, still runs to its end there)"
            )
