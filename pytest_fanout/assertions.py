"""Assertions on Measurements, with messages that say what was expected, what was seen,
and what it means. Pure functions: the `fanout` fixture delegates to them.

Counts of calls in flight are checked on the request's structure, the held
probe's waves (exact on any machine, at any load); the timed peaks are shown
beside them, and stand in only for a Measurement without a held probe.
"""

from __future__ import annotations

from pytest_fanout.diagnosis import (
    IN_FLIGHT_IS_NOT_RATE,
    LIMIT_KNOBS,
    finding_for,
    left_open,
    rate_limiter_advice,
    where_blocked,
)
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


#: The findings that explain a concurrency other than the one asserted (the first one found
#: ends the message).
_WRONG_STRUCTURE = ("sequential", "pool-cap", "rate-exceeded", "upstream-429")


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
            f"{held}{timed}" + _finding_suffix(m, *_WRONG_STRUCTURE, "slow-client")
        )
    if peak is not None:
        if held is not None and max(held, default=0) != peak:
            raise FanoutAssertionError(
                f"expected {peak} calls in flight at once at {where} during {label}, the "
                f"held probe saw at most {max(held, default=0)} (waves {held}){timed}: "
                f"{_structure_meaning(peak, held)}"
                + _finding_suffix(m, *_WRONG_STRUCTURE, "blocks-loop")
            )
        wrong = [p for p in peaks if p != peak]
        if held is None and wrong:
            seen = wrong[0]
            detail = f" (per sample: {peaks})" if len(set(peaks)) > 1 else ""
            raise FanoutAssertionError(
                f"expected {peak} requests in flight at {where} during {label}, "
                f"saw {seen}{detail} (timed): {_timed_meaning(peak, seen)}"
                + _finding_suffix(m, *_WRONG_STRUCTURE, "blocks-loop")
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
    within the request that opened them (the same), new connections never closed (a client
    built and not closed: a leak), or new connections that outlive it (a keep-alive pool
    smaller than the fan-out)."""
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
        meaning
        for name in names
        if (
            meaning := _reuse_meaning(
                m.upstream(name), worst, named, left_open(m, m.upstream(name))
            )
        )
    ]
    meaning = "; ".join(meanings) or f"{opened[worst]} new connections in a sample"
    raise FanoutAssertionError(
        f"expected at most {at_most} new connections per call of {label} after warm-up: {meaning}"
        + _finding_suffix(m, "no-connection-reuse", "connection-leak", "connection-churn")
    )


def _reuse_meaning(
    g: UpstreamGauges, sample: int, named: bool, leak: tuple[int, int | None] | None = None
) -> str:
    """What one upstream's connection counts in `sample` show, or '' when it opened none;
    `leak`: `left_open`'s evidence that the app never closed them."""
    if sample >= len(g.connections_per_sample) or sample >= len(g.requests_per_sample):
        return ""
    new, made = g.connections_per_sample[sample], g.requests_per_sample[sample]
    if not new:
        return ""
    at = f" at upstream {g.name!r}" if named else ""
    if leak is not None:
        how = (
            f"all left open ({leak[1]} open at the end, more after every sample)"
            if leak[1] is not None
            else "none closed by the end of the request nor reused by the next"
        )
        return (
            f"{new} new connections for {made} calls{at}, {how}: a client built and not "
            "closed (a leak), not a small pool"
        )
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


# ---- rate limits (issue 33) --------------------------------------------------------------------

#: Retry waits named in a message, at most.
_WAITS_SHOWN = 5


def _limited_upstreams(m: Measurement, upstream: str | None, what: str) -> list[UpstreamGauges]:
    """The upstreams to judge: the one named, or every one with a rate limit or a
    max_inflight cap; an error line when there is none (nothing to judge against)."""
    names = m.upstream_names if upstream is None else [upstream]
    if not names:
        raise FanoutAssertionError(f"{what}: {m.path} was measured without upstream gauges")
    gauges = [m.upstream(name) for name in names]
    limited = [g for g in gauges if g.has_limit]
    if not limited:
        which = f"upstream {upstream!r} has" if upstream else "no upstream of this stack has"
        raise FanoutAssertionError(
            f"{what}: {which} a rate_limit or max_inflight to judge {m.path} against "
            '(rate_limit = "50/s" in its [tool.fanout.upstreams.NAME] table or marker)'
        )
    return limited


def _allows(g: UpstreamGauges) -> str:
    """What the upstream allows, as configured: "50/s", "GET /x 5/s", "5 in flight"."""
    parts = [g.rate_limit] if g.rate_limit else []
    parts += [f"{route} {v.get('rate_limit')}" for route, v in g.route_limits.items()]
    if g.max_inflight:
        parts.append(f"{g.max_inflight} in flight")
    return ", ".join(parts)


def _bounded_at(g: UpstreamGauges) -> int | None:
    """The bound of a semaphore (or pool) the evidence shows: the held probe's waves are
    more than one, each full wave the same size above 1 (or, without a held probe, the
    timed peak is the same above 1 in every sample); None otherwise."""
    waves = g.waves
    if waves:
        full = waves[:-1]
        if len(waves) > 1 and waves[0] > 1 and all(w == waves[0] for w in full):
            return waves[0] if waves[-1] <= waves[0] else None
        return None
    peaks = g.peak_per_sample
    if peaks and peaks[0] > 1 and len(set(peaks)) == 1 and g.requests > peaks[0]:
        return peaks[0]
    return None


def _limiter(g: UpstreamGauges) -> str:
    """The rate limiter for the upstream's rate (`diagnosis.rate_limiter_advice`)."""
    text = g.rate_limit or next(iter(g.route_limits.values()), {}).get("rate_limit", "")
    return rate_limiter_advice(str(text))


def _sources(g: UpstreamGauges) -> tuple[int, int, int]:
    """The 429s by who sent them: (a rate limit, max_inflight, the upstream's own answer);
    every one the upstream's own when the stub did not tell them apart (older data)."""
    if not g.sources_known:
        return 0, 0, g.rejected
    limited = g.limited if g.rate_limit or g.route_limits else 0
    return limited, g.capped, g.rejected - limited - g.capped


def assert_within_limits(m: Measurement, upstream: str | None = None) -> None:
    """No call to a rate-limited (or max_inflight) upstream was answered 429, at every
    such upstream or the one named: the service sent no more than the upstream allows.
    The message says what it sent (calls per second, at once, how long each took)
    against what the upstream allows, and what bounds a rate."""
    __tracebackhide__ = True
    for g in _limited_upstreams(m, upstream, "assert_within_limits"):
        if not g.rejected:
            continue
        calls = sum(g.requests_per_sample)
        at_once = g.structure_peak if g.structure_peak is not None else g.peak_inflight
        latency = g.mean_latency_s
        rate = g.calls_per_s
        if rate is None and latency:
            rate = at_once / latency
        sent = f"sent up to {rate:.0f} calls/s" if rate is not None else "sent"
        shape = f"{at_once} at once" + (f", {_ms(latency)} each" if latency else "")
        # Of the calls, not of the 429s: a retry that waited is often the call answered 200.
        retried = f" ({g.retries} of the {calls} calls were retries)" if g.retries else ""
        limited, capped, own = _sources(g)
        answered = [f"{limited} of {calls} answered 429"] if limited else []
        if capped:
            answered.append(f"{capped} answered 429 by its cap of {g.max_inflight} in flight")
        if own:
            answered.append(
                f"{own} answered 429 by its own answer, not by a limit (a route's status or "
                "a handler: upstream 429)"
                if g.sources_known
                else f"{own} of {calls} answered 429 (the record does not say what answered)"
            )
        head = (
            f"{m.method} {m.path} {sent} ({shape}) to {g.name!r}, which allows {_allows(g)}: "
            f"{'; '.join(answered)}{retried}"
        )
        bound = _bounded_at(g)
        advice = []
        if limited and bound is not None:
            advice.append(
                f"Its calls are bounded at {bound} in flight; {IN_FLIGHT_IS_NOT_RATE}: use "
                f"{_limiter(g)}"
            )
        elif limited:
            advice.append(
                f"It sent them faster than {_allows(g)} allows: pace them with {_limiter(g)}, "
                "and retry a 429 after the Retry-After it gives"
            )
        if capped:
            advice.append(
                f"At most {g.max_inflight} may be in flight at once: bound the calls with "
                f"asyncio.Semaphore({g.max_inflight})"
            )
        if own:
            advice.append("Back off as its Retry-After says, and bound the retries")
        advice_text = ". ".join(advice)
        per = (
            f" (429s per sample: {g.rejected_per_sample})" if len(g.rejected_per_sample) > 1 else ""
        )
        raise FanoutAssertionError(f"{head}{per}. {advice_text}")


def _wait(seconds: float | None) -> str:
    return "no wait" if seconds is None else _ms(seconds)


def assert_backs_off(m: Measurement, upstream: str | None = None, max_retries: int = 3) -> None:
    """Every retry of a 429 came no sooner than the shortest wait the 429 asked for
    (retry-after-ms when given, else Retry-After), and no call was retried more than
    `max_retries` times, at every rate-limited upstream or the one named."""
    __tracebackhide__ = True
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
    label = f"{m.method} {m.path}"
    for g in _limited_upstreams(m, upstream, "assert_backs_off"):
        early = [w for w in g.retry_waits if w.early]
        problems = []
        if early:
            shown = "; ".join(
                f"{w.method} {w.path} after {_wait(w.waited_s)} (asked {_wait(w.asked_s)})"
                for w in early[:_WAITS_SHOWN]
            )
            more = f"; and {len(early) - _WAITS_SHOWN} more" if len(early) > _WAITS_SHOWN else ""
            problems.append(
                f"{len(early)} of {len(g.retry_waits)} retries of a 429 came before the wait "
                f"it asked for: {shown}{more}"
            )
        if g.most_retries > max_retries:
            problems.append(
                f"one call was retried {g.most_retries} times (max_retries={max_retries}); "
                f"{g.retries} retries in all, {g.amplification:.2f} calls per distinct call"
            )
        if problems:
            raise FanoutAssertionError(
                f"{label} did not back off at {g.name!r} ({_allows(g)}): "
                + "; ".join(problems)
                + ". Wait at least the Retry-After (or retry-after-ms) a 429 gives before "
                "retrying it, and bound the retries"
            )
