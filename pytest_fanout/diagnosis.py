"""What is wrong with a fan-out, read off one Measurement: a list of findings.

Each finding has a `kind`, a one-line `message` and whether the harness
decided it `exact`ly (from counts: the held probe's waves, requests,
connections, 429s) or from timing (then the message gives its margin). Exact
findings come first and are never dropped for a timing one:

- `sequential`: the held probe's waves at an upstream are all of one call,
  though the path's concurrency says more (each call awaited before the next);
  without `n`: 3 or more consecutive waves of one call each to one route (a loop;
  it holds if the calls do not need each other's answers);
- `pool-cap`: the largest wave is below the fan-out the path asks for: a
  connection-pool limit or a semaphore of that size (with the knob to turn);
- `no-connection-reuse`: a client built per request (or per call): every
  connection the stub saw opened in a sample closed by the end of that request,
  whatever the concurrency (gathered, batched or sequential);
- `connection-leak`: new connections in every sample after warm-up, none closed:
  every one still open at the end, more after every sample (a client built and not
  closed);
- `connection-churn`: new connections in every sample after warm-up, fewer than
  the calls, that outlive the request (a keep-alive pool smaller than the fan-out);
- `upstream-429` / `upstream-errors`: the upstream refused or failed calls (429s by its
  max_inflight cap or its own answer, named as such: never the rate limit's);
- `rate-exceeded`: an upstream's rate limit (`rate_limit = "50/s"`) answered calls 429
  (counted apart by the stub from its other 429s): the service sends faster than it
  allows (a semaphore or a thread pool bounds calls in flight, not calls per second);
- `retry-storm`: calls repeated after a 429 or 5xx at once, with no backoff, so the
  upstream gets several calls for each the service means to make (amplification);
- `retry-after-ignored`: retries that came sooner than the wait their 429 asked for
  (`retry-after-ms`, else `Retry-After`);
- `retry-amplification`: one call sent more times than any one retry layer allows (an
  SDK's retries inside a retry decorator's attempts: "18 calls for one: 3 tries x 6
  attempts, 45 s");
- `orphaned-calls`: calls still in flight at the stub when the endpoint answered, or
  begun after (`asyncio.gather` leaves them running when one fails);
- `work-after-disconnect`: with a hang-up, calls still running after the caller left;
- `buffered-stream` (timing): a streamed answer whose first byte came after the
  upstreams' last byte in every sample: it waits for every call before it sends;
- `blocks-loop` (timing): the app's own code held its event loop beyond the
  blocking limit (40 ms whatever the delay; garbage collection and time the
  loop waited for a CPU are not counted); where: the place most of the stall's
  samples caught (the user's line and the call it was in, or the library);
- `gc-pauses` (timing): garbage collection alone held the loop beyond the limit
  in a stall: how long, in how many collections, which generation, and where
  the code was allocating;
- `slow-client` (timing): the code puts every call in flight at once (held
  probe) but the timed samples reached fewer at the configured delay: the
  client cannot issue calls as fast as the upstream answers; with its CPU per
  call and the delay at which the timed peak would be whole;
- `delay-too-short` (timing): the upstream answers at once, so timed peaks
  cannot show the structure (the held probe's waves do);
- `no-timeout` (a failed measurement, `no_timeout`): the request waited on a hung
  upstream (`hang = true`) until the harness gave up: its client has no timeout.

`headline` and `efficiency_cell` are the two cells the measurement tables show
(pytest's summary, `fanout patterns`).

Without a held probe (a Measurement saved before it existed) `sequential` and
`pool-cap` fall back to the timed peaks, and only at a delay of 50 ms or more.
A healthy fan-out gets none.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from pytest_fanout.limits import (
    BUFFERED_MIN_SHARE,
    BUFFERED_MIN_SPREAD_S,
    DEFAULT_CLIENT_POOL,
    PACED_MIN_WAIT_S,
    PACED_NEAR_LIMIT,
    PACED_WAIT_FACTOR,
    SEQUENTIAL_MIN_RUN,
    SLOW_CLIENT_MIN_SHARE,
    ConfigError,
    parse_rate,
)
from pytest_fanout.measurement import (
    Measurement,
    RetryWait,
    UpstreamGauges,
    stall_gc_s,
    stall_held_s,
)
from pytest_fanout.servers.callstacks import GIL_WAIT, describe_stall, longest_stall

#: Why a bound on the calls in flight keeps no service within a rate limit: the words of
#: `rate-exceeded` and `assert_within_limits` (a sync service's bound is its thread pool).
IN_FLIGHT_IS_NOT_RATE = (
    "a semaphore or a thread pool bounds how many calls are in flight, not how many per second"
)
#: Exact kinds first: a timing finding never displaces one of them.
EXACT_KINDS = (
    "sequential",
    "pool-cap",
    "no-connection-reuse",
    "connection-leak",
    "connection-churn",
    "rate-exceeded",
    "upstream-429",
    "retry-amplification",
    "retry-storm",
    "retry-after-ignored",
    "upstream-errors",
    "orphaned-calls",
    "work-after-disconnect",
)
TIMING_KINDS = ("buffered-stream", "blocks-loop", "gc-pauses", "slow-client", "delay-too-short")
KINDS = EXACT_KINDS + TIMING_KINDS
#: Findings that explain why a measurement failed (no Measurement to diagnose).
FAILURE_KINDS = ("no-timeout",)
#: Each verdict's one name: the first words of its message and of its table cell, in the
#: terminal summary, `fanout patterns`/`fanout measure`, the assertion messages and saved runs.
NAMES = {
    "sequential": "sequential",
    "pool-cap": "pool cap",
    "no-connection-reuse": "no connection reuse",
    "connection-leak": "connection leak",
    "connection-churn": "connection churn",
    "rate-exceeded": "rate exceeded",
    "upstream-429": "upstream 429",
    "retry-amplification": "retry amplification",
    "retry-storm": "retry storm",
    "retry-after-ignored": "retry-after ignored",
    "upstream-errors": "upstream errors",
    "orphaned-calls": "orphaned calls",
    "work-after-disconnect": "work after disconnect",
    "buffered-stream": "buffered stream",
    "blocks-loop": "blocks the loop",
    "gc-pauses": "garbage collection",
    "slow-client": "slow client",
    "delay-too-short": "delay too short",
    "no-timeout": "no timeout",
}
#: Below this delay, timed peaks alone never give `sequential` or `pool-cap` (old data).
TIMED_PEAK_MIN_DELAY_S = 0.05
#: The usual knobs of a limit found in the waves.
LIMIT_KNOBS = (
    "httpx.Limits(max_connections=...), 100 by default; aiohttp's "
    "TCPConnector(limit=..., limit_per_host=...), limit 100 by default; or an "
    "asyncio.Semaphore, batches or a thread pool of that size"
)


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a fan-out."""

    kind: str
    message: str
    #: Decided from exact counts (True) or from timing (False: the message gives the margin).
    exact: bool
    #: The finding in a few words, for a table cell (the message when empty).
    short: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.message

    @property
    def cell(self) -> str:
        return self.short or self.message


def diagnose(m: Measurement) -> list[Finding]:
    """Every finding for `m`: exact ones first, then timing ones; [] for a healthy fan-out."""
    findings: list[Finding] = []
    for gauges in _upstreams(m):
        label = _label(m, gauges.name)
        for check in (
            _sequential_any,
            _no_reuse,
            _leak,
            _churn,
            _pool_cap,
            _rate_limited,
            _rejected,
            _retry_amplification,
            _retry_backoff,
            _errors,
            _orphaned,
            _after_disconnect,
        ):
            finding = check(m, gauges, label)
            if finding is not None:
                findings.append(finding)
    for check in (_buffered_stream, _blocks_loop, _gc_pauses):
        timed = check(m)
        if timed is not None:
            findings.append(timed)
    findings.extend(_timing(m))
    findings.sort(key=lambda f: KINDS.index(f.kind))
    return findings


def finding_for(m: Measurement, *kinds: str) -> Finding | None:
    """The most important finding of one of `kinds` (all kinds when none given), or None."""
    for finding in diagnose(m):
        if not kinds or finding.kind in kinds:
            return finding
    return None


# ---- the summary's cells: the headline finding and the efficiency ----------------

#: The loop counts as blocked when its worst stall is this share of the request's time.
BLOCKED_SHARE = 0.5
#: ... and at least this long (a scheduler hiccup on a busy machine is not a block).
BLOCKED_MIN_S = 0.02
BLOCKED_MARK = " (loop blocked)"


def blocks_loop(m: Measurement) -> bool:
    """True when the app's own code held its event loop for most of the request (garbage
    collection and waits for a CPU not counted): a blocking route."""
    lag = m.blocking_lag_s
    return lag >= BLOCKED_MIN_S and lag >= BLOCKED_SHARE * m.median_s


def efficiency_cell(m: Measurement) -> str:
    """The efficiency as a table shows it: "-" when the ideal is unknown, marked when the
    route blocked the loop (its wall time is fine only because nothing else ran)."""
    if m.efficiency is None:
        return "-"
    return f"{m.efficiency:.2f}" + (BLOCKED_MARK if blocks_loop(m) else "")


def headline(m: Measurement) -> str:
    """The most important finding in a few words, for a table cell; '-' when healthy."""
    findings = diagnose(m)
    if not findings:
        return "-"
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    return findings[0].cell + more


def where_blocked(m: Measurement) -> str | None:
    """Where the app's own code held the loop longest (the place that held that stall
    longest), or None without a stall."""
    stall = _worst_held(m)
    return None if stall is None else describe_stall(stall)


# ---- the checks --------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _worst_held(m: Measurement) -> dict[str, Any] | None:
    return max(m.stalls, key=stall_held_s, default=None) if m.stalls else None


def _blocks_loop(m: Measurement) -> Finding | None:
    if not m.loop_lag_per_sample:
        return None
    limit = m.lag_limit_s
    held = m.blocking_lag_s
    if held <= limit:
        return None
    stall = _worst_held(m)
    if stall is None:
        where = "no stack (the stack sampler is off, or caught nothing)"
        detail = f"stalled {_ms(held)}, {held / limit:.1f}x the {_ms(limit)} limit"
        waited = m.uncaught_lag_wait_s
        if waited >= 0.001:
            detail += f", besides {_ms(waited)} the app waited for a CPU"
    else:
        where = describe_stall(stall)
        detail = f"held it {_ms(held)}, {held / limit:.1f}x the {_ms(limit)} limit"
        apart = _apart(stall)
        if apart:
            detail += f"; the stall was {_ms(stall.get('duration_s', 0.0))}, {apart}"
        ran = stall.get("ran_s")
        if where.startswith(GIL_WAIT):
            detail += (
                "; code on another thread (a thread pool, a C extension) held the GIL "
                "without letting it go, and the loop could not run meanwhile"
            )
        elif ran is not None and ran < held / 2:
            detail += (
                "; the loop waited in that call (I/O or a sleep, not CPU), "
                "so the stall lasts as long as what it waits for"
            )
    return Finding(
        "blocks-loop",
        f"blocks the loop: {where} ({detail})",
        exact=False,
        short=f"blocks the loop: {where}",
    )


def lag_cause(m: Measurement) -> str | None:
    """Why the loop lagged beyond the limit when the app's own code did not hold it that
    long (no `blocks-loop`): the worst stall's time waiting for a CPU (the process's own
    run-queue time, /proc schedstat) and its garbage collection,
    e.g. `waited for a CPU, the runner was busy: 58 ms runnable but not running`, and how
    long the code held it. With no stall sampled, the app's wait for a CPU in the worst
    sample (summed over its threads), if it had any. None under the limit, when code held
    the loop, or with neither figure."""
    limit = m.lag_limit_s
    if m.loop_lag_max_s <= limit or m.blocking_lag_s > limit:
        return None
    stall = longest_stall(m.stalls)
    if stall is None:
        waited = m.uncaught_lag_wait_s
        if waited < 0.001:
            return None
        return (
            f"waited for a CPU, the runner was busy: the app's threads waited {_ms(waited)} "
            "for one in that sample (the stack sampler caught no stall)"
        )
    parts = []
    starved = float(stall.get("starved_s", 0.0))
    if starved >= 0.001:
        parts.append(
            f"waited for a CPU, the runner was busy: {_ms(starved)} runnable but not running"
        )
    gc_s = stall_gc_s(stall)
    if gc_s >= 0.001:
        parts.append(f"{_ms(gc_s)} in garbage collection")
    held = stall_held_s(stall)
    parts.append(f"the app's code held it {_ms(held)} (under the {_ms(limit)} limit)")
    return "; ".join(parts)


def _apart(stall: dict[str, Any]) -> str:
    """`70 ms of it in garbage collection, 12 ms waiting for a CPU`, or ''."""
    parts = []
    if stall.get("gc_s", 0.0) >= 0.001:
        parts.append(f"{_ms(stall['gc_s'])} of it in garbage collection")
    if stall.get("starved_s", 0.0) >= 0.001:
        parts.append(f"{_ms(stall['starved_s'])} waiting for a CPU")
    return ", ".join(parts)


def _gc_pauses(m: Measurement) -> Finding | None:
    """The garbage collector alone held the loop beyond the limit in one stall (its own
    time: waits for a CPU during a collection are the runner's, not the collector's)."""
    stall = max(m.stalls, key=stall_gc_s, default=None)
    limit = m.lag_limit_s
    if stall is None or stall_gc_s(stall) <= limit:
        return None
    gc_s, count = stall["gc_s"], stall.get("gc_collections", 0)
    generation = stall.get("gc_generation", -1)
    where = describe_stall(stall, gc=True)
    during = "" if where == "no stack sampled" else f" while the code allocated at {where}"
    plural = "s" if count != 1 else ""
    return Finding(
        "gc-pauses",
        f"garbage collection: the loop stalled {_ms(stall.get('duration_s', 0.0))}, "
        f"{_ms(gc_s)} of it in {count} garbage collection{plural} (generation {generation})"
        f"{during}: many objects allocated at once; not blocking code",
        exact=False,
        short=f"garbage collection: {_ms(gc_s)} in {count} collection{plural}",
    )


def _timing(m: Measurement) -> list[Finding]:
    """`slow-client` or `delay-too-short`, from the held probe's waves against the timed
    peaks of the default upstream (the one whose delay the samples waited)."""
    if not m.structure or not m.upstream_gauges:
        return []
    g = m.upstream()
    if g.waves is None or not g.peak_per_sample:
        return []
    full, timed = max(g.waves, default=0), max(g.peak_per_sample)
    if full <= 1 or timed >= full:
        return []
    if g.rejected or _at_limit_pace(g):
        # Calls refused with a 429 are answered at once (a rate limit, a cap), and calls a
        # limiter paces to the upstream's limit are spaced out by it: either way the timed
        # peak is lower for that, which says nothing of how fast the client issues calls.
        return []
    label = _label(m, g.name)
    delay = m.upstream_delay_s or 0.0
    if delay <= 0:
        return [
            Finding(
                "delay-too-short",
                f"delay too short: {label} answers at once (delay 0), so the timed samples "
                f"cannot overlap calls (timed peak {timed}); the held probe shows {full} in "
                "flight at once. Timing (peak, efficiency) is not judged at this delay",
                exact=False,
                short=f"delay too short{_tag(m, g.name)}: timed peak {timed}, held {full}",
            )
        ]
    if _issue_s(m, full) < SLOW_CLIENT_MIN_SHARE * delay:
        return []  # issuing them costs far less than the delay: not the client's speed
    cost = _issue_cost(m, full)
    if max(m.app_threads_per_sample, default=0) >= full:
        cost += (
            "; the calls run on threads: starting them and parsing under the GIL is the "
            "cost per call"
        )
    return [
        Finding(
            "slow-client",
            f"slow client: the code puts {full} calls in flight at once at {label} (held "
            f"probe) but the timed samples reached {timed} at the {_ms(delay)} delay: the "
            f"client cannot issue calls as fast as the upstream answers{cost}",
            exact=False,
            short=f"slow client{_tag(m, g.name)}: timed peak {timed} of {full}",
        )
    ]


def _issue_s(m: Measurement, calls: int) -> float:
    """Seconds of the app's CPU to issue `calls` calls (its CPU per request over all its
    calls: an over-estimate); infinite when unknown, so nothing is ruled out."""
    per_request = m.cpu_per_request_s
    total_calls = sum(sum(w) for w in m.structure.values())
    if per_request is None or not total_calls:
        return float("inf")
    return per_request / total_calls * calls


def _issue_cost(m: Measurement, calls: int) -> str:
    """`; 1.9 ms of the app's CPU per call (...)` with the delay the peak would need."""
    per_request = m.cpu_per_request_s
    total_calls = sum(sum(w) for w in m.structure.values())
    if per_request is None or not total_calls:
        return ""
    per_call = per_request / total_calls
    needed = per_call * calls
    text = (
        f"; the app spends {per_call * 1000:.2f} ms of CPU per call ({_ms(per_request)} for "
        f"{total_calls} calls), so issuing {calls} takes about {_ms(needed)}: at a delay "
        f"above that the timed peak would reach {calls}"
    )
    where = _library_where(m)
    return text + (f"; the longest stall was in {where}" if where else "")


def _library_where(m: Measurement) -> str | None:
    """The library the longest stall was in, when no frame of the user's code was."""
    stall = longest_stall(m.stalls)
    if stall is None:
        return None
    described = describe_stall(stall)
    return described if "no frame of your code" in described else None


def _upstreams(m: Measurement) -> list[Any]:
    names = getattr(m, "upstream_names", [])  # a Measurement saved before named upstreams
    return [m.upstream(name) for name in names]


def _label(m: Measurement, name: str) -> str:
    return "the upstream" if len(m.upstream_names) == 1 else f"upstream {name!r}"


def _tag(m: Measurement, name: str) -> str:
    """` (name)` in a short text, when the stack has several upstreams."""
    return "" if len(m.upstream_names) == 1 else f" ({name})"


def _waves_text(waves: list[int]) -> str:
    """`[7, 7, 7, 7, 7, 5]`, `[1] x 8` for long runs of ones, `[100, 100]`."""
    if len(waves) > 4 and set(waves) == {1}:
        return f"[1] x {len(waves)}"
    if len(waves) > 12:
        return "[" + ", ".join(map(str, waves[:10])) + f", ... ({len(waves)} waves)]"
    return str(waves)


def _sequential(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    wanted = m.concurrency or 0
    if wanted <= 1:
        return None
    if g.waves is not None:
        if len(g.waves) < 2 or set(g.waves) != {1}:
            return None
        evidence = f"held waves {_waves_text(g.waves)}"
        calls = len(g.waves)
    else:
        if not _timed_peaks_judge(m, g) or min(g.requests_per_sample) < 2:
            return None
        if max(g.peak_per_sample) != 1:
            return None
        evidence = "timed peak 1 in every sample"
        calls = g.requests
    return Finding(
        "sequential",
        f"sequential: {calls} calls to {label} went one at a time ({evidence}) though "
        f"{m.path} asks for concurrency {wanted}: "
        + _why_one_at_a_time(
            m, "each call is awaited before the next (an `await` in a loop, or a blocking call)"
        ),
        exact=True,
        short=f"sequential{_tag(m, g.name)}: peak 1 of {wanted}",
    )


def _timed_peaks_judge(m: Measurement, g: UpstreamGauges) -> bool:
    """Timed peaks stand in for the structure: old data, at a delay long enough."""
    delay = m.upstream_delay_s
    return bool(g.peak_per_sample) and delay is not None and delay >= TIMED_PEAK_MIN_DELAY_S


def _paired(m: Measurement, g: UpstreamGauges) -> list[tuple[int, int, int | None]]:
    """(connections opened, of those closed by the answer or None when not counted,
    requests) per sample after warm-up, when the connection gauge covers every sample;
    without a warm-up call the first sample opens the pool, so it is left out."""
    requests, opened = g.requests_per_sample, g.connections_per_sample
    if not requests or len(opened) != len(requests):
        return []
    closed: list[int | None] = (
        list(g.closed_per_sample)
        if len(g.closed_per_sample) == len(requests)
        else [None] * len(requests)
    )
    triples = list(zip(opened, closed, requests, strict=True))
    return triples if m.warmup or m.structure else triples[1:]  # the held probe warms up too


def _cancelled(g: UpstreamGauges) -> bool:
    """The app cancelled calls in every sample (their connections closed unanswered) and
    opened no more new connections than it cut: the new ones replace those, which is not
    a client per request nor a small pool."""
    cut, opened = g.cut_per_sample, g.connections_per_sample
    if not cut or len(cut) != len(opened) or not all(cut):
        return False
    return max(opened) <= max(cut)


def _no_reuse(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    """A client built per request (or per call): the connections it opens all close by the
    end of the request that opened them, whatever the concurrency (gathered, batched or
    sequential). Without lifetimes (old data): a new connection for every call."""
    triples = _paired(m, g)
    if not triples or _cancelled(g):
        return None
    lifetimes = all(closed is not None for _, closed, _ in triples)
    if lifetimes:
        if any(c < 1 or r < 2 or closed != c for c, closed, r in triples):
            return None
    elif any(r < 2 or c < r for c, _, r in triples):
        return None
    opened = g.connections_opened
    reuse = "none reused" if opened >= g.requests else "reused only within the request"
    evidence = (
        f"every connection to {label} closed by the end of the request that opened it "
        f"({opened} opened for {g.requests} calls in a sample, {reuse})"
        if lifetimes
        else f"a new connection for every call to {label} ({opened} for {g.requests} calls "
        "in a sample)"
    )
    return Finding(
        "no-connection-reuse",
        f"no connection reuse: {evidence}: a client built per request (or per call); build "
        "one client for the app's lifetime and share it",
        exact=True,
        short=f"no connection reuse{_tag(m, g.name)}: {opened} new for {g.requests} calls",
    )


def _churn(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    """New connections in every sample that outlive the request: a keep-alive pool that
    keeps fewer connections than the fan-out uses."""
    triples = _paired(m, g)
    if not triples or _cancelled(g) or any(not 0 < c < r for c, _, r in triples):
        return None
    if left_open(m, g) is not None:
        return None  # never closed: a leak (`_leak`), not a small pool
    if all(closed is not None and closed == c for c, closed, _ in triples):
        return None  # all closed with the request: a client per request, not a small pool
    low, high = min(c for c, _, _ in triples), max(c for c, _, _ in triples)
    opened = str(high) if low == high else f"{low}-{high}"
    lifetimes = all(closed is not None for _, closed, _ in triples)
    outliving = ", outliving the request" if lifetimes else " (lifetimes not counted)"
    return Finding(
        "connection-churn",
        f"connection churn: {opened} new connections to {label} in every sample after "
        f"warm-up, for {g.requests} calls{outliving}: a keep-alive pool smaller "
        "than the fan-out?",
        exact=True,
        short=f"connection churn{_tag(m, g.name)}: {opened} new for {g.requests} calls",
    )


def default_pool_spill(m: Measurement, g: UpstreamGauges) -> tuple[int, list[str]] | None:
    """(calls, routes) of the first held wave of exactly DEFAULT_CLIENT_POOL calls whose
    next wave asks only routes that full wave asked too (the same calls, spilled into a
    second round), else None: the default pool of httpx or aiohttp capping a gather."""
    waves, routes = g.waves or [], m.structure_routes.get(g.name, [])
    if len(routes) < sum(waves):
        return None
    starts = [sum(waves[:i]) for i in range(len(waves))]
    asked = [set(routes[at : at + size]) for at, size in zip(starts, waves, strict=True)]
    for index, size in enumerate(waves[:-1]):
        if size != DEFAULT_CLIENT_POOL or not asked[index + 1] <= asked[index]:
            continue
        end = index + 1
        while end < len(waves) and asked[end] <= asked[index]:
            end += 1
        return sum(waves[index:end]), sorted(asked[index])
    return None


def _default_pool_cap(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    """`pool-cap` without `n`: a gather the default pool capped (`default_pool_spill`)."""
    found = default_pool_spill(m, g)
    if found is None:
        return None
    calls, routes = found
    cap = DEFAULT_CLIENT_POOL
    asked = ", ".join(routes[:3]) + (f" and {len(routes) - 3} more" if len(routes) > 3 else "")
    return Finding(
        "pool-cap",
        f"pool cap: at most {cap} calls in flight at once at {label} (held waves "
        f"{_waves_text(g.waves or [])}): {calls} calls of {asked} in "
        f"{-(-calls // cap)} rounds, the first of exactly {cap}, the default pool of httpx "
        f"(httpx.Limits(max_connections=100)) and aiohttp (TCPConnector(limit=100)); if they "
        "are meant to run at once, raise the limit (or give n to say how many may)",
        exact=True,
        short=f"pool cap{_tag(m, g.name)}: peak {cap}, the default pool",
    )


def _pool_cap(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    if g.rejected:
        return None  # a stub that answers 429 caps the peak itself
    if m.n is None or m.concurrency is None:
        return _default_pool_cap(m, g, label)
    asked = min(m.n, m.concurrency)
    if g.waves is not None:
        if sum(g.waves) < asked:
            return None
        cap = max(g.waves, default=0)
        evidence = f"held waves {_waves_text(g.waves)}"
    else:
        peaks = g.peak_per_sample
        if not _timed_peaks_judge(m, g) or len(peaks) < 2 or len(set(peaks)) != 1:
            return None
        if min(g.requests_per_sample) < asked:
            return None
        cap, evidence = peaks[0], "the same timed peak in every sample"
    if not 1 < cap < asked:
        return None
    threads = max(m.app_threads_per_sample, default=0)
    if threads >= cap:
        cause = (
            f"a thread pool of {cap} workers caps them ({threads} threads started per "
            "request: ThreadPoolExecutor(max_workers=...)); threads are a fan-out too"
        )
    else:
        cause = f"a limit of {cap} caps them ({LIMIT_KNOBS})"
    return Finding(
        "pool-cap",
        f"pool cap: at most {cap} calls in flight at once at {label} ({evidence}), though "
        f"{m.path} asks for {asked}: {cause}",
        exact=True,
        short=f"pool cap{_tag(m, g.name)}: peak {cap} of {asked}",
    )


#: Advice on 429s by who sent them: max_inflight, or the upstream's own answer.
_CAPPED_ADVICE = "no backpressure? bound the fan-out (a semaphore) or retry with backoff"
_OWN_ADVICE = "back off as its Retry-After says, and bound the retries"


def _rate_limited(m: Measurement, g: Any, label: str) -> Finding | None:
    """`rate-exceeded` from the 429s the stub's rate limit sent, and only those."""
    limit = rate_limit_of(m, g)
    if limit and g.sources_known and g.limited:
        return _rate_exceeded(m, g, label, limit)
    return None


def _rejected(m: Measurement, g: Any, label: str) -> Finding | None:
    """`upstream-429` from the 429s no rate limit sent, naming who did when the stub said."""
    if not g.sources_known:  # data saved before the stub told its 429s apart
        why = f" with 429 (too many in flight): {_CAPPED_ADVICE}"
        if g.rate_limit or g.route_limits:
            why = f" with 429 (the record does not say what answered them): {_OWN_ADVICE}"
        elif g.limits and not g.max_inflight:  # its own answer: a route's status or a handler
            why = f" with 429 (its own answer: out of quota, or overloaded): {_OWN_ADVICE}"
        return _bad_answers(
            m, g, g.rejected, ("upstream-429", "upstream 429"), f"{label} refused", why
        )
    limited = g.limited if rate_limit_of(m, g) else 0
    capped, own = g.capped, g.rejected - limited - g.capped
    parts, advice = [], []
    if capped:
        parts.append((capped, f"by its cap of {g.max_inflight} in flight"))
        advice.append(_CAPPED_ADVICE)
    if own:
        parts.append(
            (own, "by its own answer (a route's status or a handler: out of quota, or overloaded)")
        )
        advice.append(_OWN_ADVICE)
    if len(parts) == 1:
        why = f" with 429 {parts[0][1]}: {advice[0]}"
    else:
        why = f" with 429: {', '.join(f'{n} {by}' for n, by in parts)}: {'; '.join(advice)}"
    return _bad_answers(
        m, g, capped + own, ("upstream-429", "upstream 429"), f"{label} refused", why
    )


# ---- rate limits and retries (issue 33): from the stub's exact facts -----------------

#: The most tries of one call a single retry layer makes by default (1 + 3 retries: the
#: `max_retries` of assert_backs_off; OpenAI's and Anthropic's SDKs make 3, 1 + 2 retries).
ONE_LAYER_MAX_TRIES = 4
#: A retry sent within this share of the wait its 429 asked for (or, with no wait asked,
#: within NO_BACKOFF_S) had no backoff at all.
NO_BACKOFF_SHARE = 0.1
NO_BACKOFF_S = 0.05
#: A retry counts as early when it came this much (s) before the asked wait: the stub
#: stamps the 429 before it is sent, so a client that waits the asked time is never early.
EARLY_SLACK_S = 0.001


def rate_limit_of(m: Measurement, g: UpstreamGauges) -> str:
    """The rate limit in force at an upstream ("50/s"; a route's: "5/s on GET /quote/{i}"),
    or "" (none, or data saved before rate limits)."""
    if g.rate_limit:
        return g.rate_limit
    for route, limit in sorted(g.route_limits.items()):
        if limit.get("rate_limit"):
            return f"{limit['rate_limit']} on {route}"
    return ""


def _per_sample(values: list[int], calls: int) -> str:
    """`5 of 10 calls in every sample` or `[5, 4, 5] of 10 calls over 3 samples`."""
    if len(set(values)) == 1:
        return f"{values[0]} of {calls} calls" + (" in every sample" if len(values) > 1 else "")
    return f"{values} of {calls} calls over {len(values)} samples"


def _rate_exceeded(m: Measurement, g: UpstreamGauges, label: str, limit: str) -> Finding:
    """An upstream with a rate limit answered 429: the words say what was sent against
    what it allows, and name the semaphore when the held waves show one."""
    per_sample = list(g.limited_per_sample) or [g.limited]
    calls = g.requests
    burst = g.limits.get("burst", 0) if g.rate_limit else 0
    allows = f"{limit}" + (f" (burst {burst})" if burst else "")
    waves = g.waves or []
    # a semaphore's waves: full ones alike above 1, the last no larger ([1, 1, 10] is not)
    bounded = (
        len(waves) > 1
        and waves[0] > 1
        and all(w == waves[0] for w in waves[:-1])
        and waves[-1] <= waves[0]
    )
    if bounded:
        why = (
            f"the service keeps {max(waves)} calls in flight at once (held waves "
            f"{_waves_text(waves)}): {IN_FLIGHT_IS_NOT_RATE}"
        )
    else:
        why = "the service sends faster than the limit"
    return Finding(
        "rate-exceeded",
        f"rate exceeded: {label} allows {allows} and answered 429 to "
        f"{_per_sample(per_sample, calls)}: {why}; pace the calls with "
        f"{rate_limiter_advice(limit)}",
        exact=True,
        short=f"rate exceeded{_tag(m, g.name)}: {g.limited} x 429 at {limit}",
    )


def rate_limiter_advice(limit: str) -> str:
    """The rate limiter that keeps a service within `limit` ("50/s", "100/hour"; a route's
    "5/s on GET /x"), in its own period (`limits.parse_rate`, every unit a limit may be
    written in): aiolimiter's in async code, and in threads one limiter they share (a
    sync service's thread pool cannot use aiolimiter). The words of `rate-exceeded` and
    `assert_within_limits`."""
    try:
        count, per_s = parse_rate(limit.split(" ")[0])
    except ConfigError:  # not a limit the stub would take: name none
        return "one rate limiter that every request shares"
    return (
        f"one rate limiter that every request shares (aiolimiter's AsyncLimiter({count}, "
        f"{per_s:g}); in threads, one thread-safe limiter of {count} calls per {per_s:g} s)"
    )


def _samples(count: int) -> str:
    return f"{count} sample" + ("" if count == 1 else "s")


def _no_backoff(wait: RetryWait) -> bool:
    if wait.asked_s:
        return wait.waited_s < NO_BACKOFF_SHARE * wait.asked_s
    return wait.waited_s < NO_BACKOFF_S


def _early(wait: RetryWait) -> bool:
    return wait.asked_s is not None and wait.waited_s < wait.asked_s - EARLY_SLACK_S


def _wait_text(waits: list[RetryWait]) -> str:
    """`within 2 ms of its 429 (it asked for 1000 ms)`, the extremes of a few waits."""
    text = f"within {_ms(max(w.waited_s for w in waits))} of its 429"
    asked = [w.asked_s for w in waits if w.asked_s is not None]
    if asked:
        low, high = min(asked), max(asked)
        text += (
            f" (it asked for {_ms(low)})" if low == high else f" (it asked {_ms(low)}-{_ms(high)})"
        )
    return text


def _retry_backoff(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    """How the retries waited after their 429 or 5xx, judged once: `retry-storm` when most
    came with no backoff at all, else `retry-after-ignored` when some came sooner than their
    429 asked for (a storm is said once, never as both)."""
    waits = g.retry_waits
    hasty = [w for w in waits if _no_backoff(w)]
    if g.retries and waits and len(hasty) * 2 > len(waits):
        return _retry_storm(m, g, label, hasty)
    early = [w for w in waits if _early(w)]
    return _retry_after_ignored(m, g, label, early, len(waits)) if early else None


def _retry_storm(m: Measurement, g: UpstreamGauges, label: str, hasty: list[RetryWait]) -> Finding:
    """Retries sent at once after their 429 or 5xx (`hasty`, most of them): no backoff."""
    retries, amplification = g.retries, g.amplification
    return Finding(
        "retry-storm",
        f"retry storm: {label} got {retries} retries in {_samples(len(g.requests_per_sample))}"
        f" (amplification {amplification:.2f}: {amplification:.2f} calls for each "
        f"distinct call); {len(hasty)} of them came {_wait_text(hasty)}: no backoff, so a "
        "limited upstream answers them 429 too; wait before retrying (exponential backoff, at "
        "least what Retry-After / retry-after-ms says) and bound the retries",
        exact=True,
        short=f"retry storm{_tag(m, g.name)}: {retries} retries, x{amplification:.2f}",
    )


def _retry_after_ignored(
    m: Measurement, g: UpstreamGauges, label: str, early: list[RetryWait], waits: int
) -> Finding:
    """Retries that waited, but less than their 429 asked for (`early`, of `waits`)."""
    first = early[0]
    example = (
        f"{first.method} {first.path} {_ms(first.waited_s)} after its 429, which "
        f"asked for {_ms(first.asked_s or 0.0)}"
    )
    return Finding(
        "retry-after-ignored",
        f"retry-after ignored: {len(early)} of {waits} retries to {label} came sooner "
        f"than the wait their 429 asked for (e.g. {example}): honour retry-after-ms or "
        "Retry-After (the OpenAI and Anthropic SDKs do)",
        exact=True,
        short=f"retry-after ignored{_tag(m, g.name)}: {len(early)} of {waits} early",
    )


def retry_layers(gaps: list[float]) -> tuple[int, int] | None:
    """(tries per attempt, attempts) when the waits between one call's tries repeat the
    pattern of two retry layers (an SDK's quick retries inside a decorator's longer
    attempts: `[a, a, W, a, a, W, a, a]` is 3 x 3); None when no split explains it."""
    tries = len(gaps) + 1
    for inner in range(2, tries // 2 + 1):
        if tries % inner:
            continue
        between = [g for i, g in enumerate(gaps) if (i + 1) % inner == 0]
        within = [g for i, g in enumerate(gaps) if (i + 1) % inner != 0]
        if between and within and min(between) > max(within):
            return inner, tries // inner
    return None


def _one_call_gaps(g: UpstreamGauges) -> list[float] | None:
    """The waits between the tries of the most retried call (its retries of a 429, in
    order), when the stub's retry waits single it out: the only call of its method and
    path retried that often in its sample; None otherwise."""
    most = g.most_retries
    for sample, count in enumerate(g.most_retries_per_sample):
        if count != most:
            continue
        groups: dict[tuple[str, str], list[float]] = {}
        for w in g.retry_waits:
            if w.sample == sample:
                groups.setdefault((w.method, w.path), []).append(w.waited_s)
        for gaps in groups.values():
            if len(gaps) == most:
                return gaps
    return None


def _retry_amplification(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    """One call sent more times than one retry layer makes: layers that multiply."""
    tries = g.most_retries + 1
    if tries <= ONE_LAYER_MAX_TRIES:
        return None
    gaps = _one_call_gaps(g)
    layers = retry_layers(gaps) if gaps else None
    schedule = f": {layers[0]} tries x {layers[1]} attempts" if layers else ""
    if gaps:
        span = sum(gaps)
        span_text = f"{span:.0f} s" if span >= 10 else f"{span:.2g} s" if span >= 1 else _ms(span)
        schedule += f", {span_text}" if layers else f" over {span_text}"
    layered = (
        "two retry layers multiply (an SDK's own retries inside each attempt of a retry "
        "decorator); keep one layer, or stop the outer one on 429"
        if layers
        else f"more than one retry layer makes (1 + {ONE_LAYER_MAX_TRIES - 1} retries); bound "
        "the retries in one place"
    )
    return Finding(
        "retry-amplification",
        f"retry amplification: {tries} calls for one{schedule} to {label} "
        f"({g.retries} retries in {_samples(len(g.requests_per_sample))}, amplification "
        f"{g.amplification:.2f}): {layered}",
        exact=True,
        short=f"retry amplification{_tag(m, g.name)}: {tries} calls for one",
    )


def _errors(m: Measurement, g: Any, label: str) -> Finding | None:
    return _bad_answers(
        m,
        g,
        g.errors,
        ("upstream-errors", "upstream errors"),
        f"{label} answered",
        " with an error status",
    )


def _bad_answers(
    m: Measurement, g: Any, count: int, kind: tuple[str, str], did: str, why: str
) -> Finding | None:
    """The finding on the `count` calls an upstream answered badly, of all it got: `kind`
    is the finding's name and its title, `did` and `why` the message around the count."""
    if not count:
        return None
    name, title = kind
    calls = f"{count} of {sum(g.requests_per_sample)} calls"
    return Finding(
        name, f"{title}: {did} {calls}{why}", exact=True, short=f"{title}{_tag(m, g.name)}: {calls}"
    )


def _orphaned(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    return _ran_on(
        m,
        g,
        "orphaned-calls",
        g.orphaned_per_sample,
        label,
        f"{m.method} {m.path} answered {m.status_code} (still in flight at the stub, or "
        "begun after)",
        "asyncio.gather does not cancel the other calls when one fails; use "
        "asyncio.TaskGroup, or cancel them",
    )


def _after_disconnect(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    return _ran_on(
        m,
        g,
        "work-after-disconnect",
        g.after_disconnect_per_sample,
        label,
        f"the caller hung up at {_ms(m.disconnect_after_s or 0.0)}",
        "the endpoint keeps working for nobody; watch for the disconnect and cancel the work",
    )


def _ran_on(
    m: Measurement,
    g: UpstreamGauges,
    kind: str,
    per_sample: list[int],
    label: str,
    after: str,
    fix: str,
) -> Finding | None:
    """Calls to an upstream that ran on for nobody `after` the endpoint stopped needing
    them (its answer left, its caller hung up), counted per sample: one set of words for
    `orphaned-calls` and `work-after-disconnect`."""
    count, samples = sum(per_sample), len(per_sample)
    if not count:
        return None
    title = NAMES[kind]
    return Finding(
        kind,
        f"{title}: {count} calls to {label} over {samples} samples ran on after {after}: {fix}",
        exact=True,
        short=f"{title}{_tag(m, g.name)}: {count} calls in {samples} samples",
    )


def no_timeout(label: str, hung: dict[str, int], waited: str) -> Finding:
    """Why `label` failed when calls to a hung upstream (`hang = true`) were still held as
    the harness gave up on it (`waited`: what it waited, from the harness's error)."""
    where = ", ".join(f"{count} call(s) to {name!r}" for name, count in hung.items())
    return Finding(
        "no-timeout",
        f"no timeout: {label} waited on the hung upstream ({where}, never answered: hang = "
        f"true) until the harness gave up ({waited}): the call has no timeout; give the "
        "client one (httpx.AsyncClient(timeout=...), asyncio.timeout(...)) so a hung upstream "
        "costs a bounded wait",
        exact=True,
        short=f"no timeout: {where}",
    )


# ---- causes read off the structure, without `n` (issue 31) ---------------------------------


def _sequential_any(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    """`sequential` against the path's `n`, else from the waves' routes alone; none when the
    calls were paced to the upstream's own rate limit (what the limit asks for)."""
    if _paced_to_limit(m, g):
        return None
    return _sequential(m, g, label) or _sequential_run(m, g, label)


def paced_wait_s(m: Measurement) -> float | None:
    """The least time, over the samples, the request spent neither in any upstream's delay
    (all of them summed, as if in turn: an upper bound) nor on the app's CPU, when in every
    sample it is at least PACED_MIN_WAIT_S and PACED_WAIT_FACTOR times those delays: something else
    spaced the calls out (a rate limiter, a sleep between calls). None otherwise, or
    without the figures (older data, no CPU reading)."""
    sums = [m.upstream(name).delay_ms_sum_per_sample for name in m.upstream_names]
    cpu = m.app_cpu_per_sample
    count = len(m.samples)
    if not count or len(cpu) != count or any(len(s) != count for s in sums) or not sums:
        return None
    waits = []
    for i, wall in enumerate(m.samples):
        delays = sum(s[i] for s in sums) / 1000
        wait = wall - delays - cpu[i]
        if wait < max(PACED_MIN_WAIT_S, PACED_WAIT_FACTOR * delays):
            return None
        waits.append(wait)
    return min(waits)


def _at_limit_pace(g: UpstreamGauges) -> bool:
    """The service sent to an upstream with a rate limit at PACED_NEAR_LIMIT of it or more,
    and the limit refused nothing: the pace is the limit's (a rate limiter doing its job),
    so the calls' spacing says nothing of a loop or of the client's speed."""
    per_s, sent = g.rate_limit_per_s, g.calls_per_s
    if not per_s or sent is None or g.limited or g.rejected:
        return False
    return sent >= PACED_NEAR_LIMIT * per_s


def _paced_to_limit(m: Measurement, g: UpstreamGauges) -> bool:
    """Calls one at a time, spaced out by the service (`paced_wait_s`), at the pace of the
    upstream's rate limit (`_at_limit_pace`): aiolimiter's AsyncLimiter, not a loop to
    gather."""
    return _at_limit_pace(g) and paced_wait_s(m) is not None


def _why_one_at_a_time(m: Measurement, awaited: str) -> str:
    """Why calls went one at a time, from what else the request did: a blocked loop (a
    blocking client in async code: gathering it overlaps nothing), calls spaced out by
    something other than their answers (`paced_wait_s`), else `awaited`."""
    if blocks_loop(m):
        return (
            "each call held the event loop until it was answered (see `blocks the loop`): a "
            "blocking client in async code; gathering its calls overlaps nothing, use an "
            "async client (then gather them)"
        )
    wait = paced_wait_s(m)
    if wait is None:
        return awaited
    return (
        f"spaced out: each request spent {_ms(wait)} or more neither in the upstreams' "
        f"delays nor on the CPU, so something other than the answers held the calls back "
        "(a rate limiter, a sleep between calls, or answers that take longer than their "
        "delay, streamed); if it paces a rate-limited upstream, declare the limit "
        "(rate_limit =) and the harness checks the pace against it"
    )


def one_at_a_time(m: Measurement, g: UpstreamGauges) -> tuple[int, str] | None:
    """(count, route) of the longest run of consecutive held waves of one call each, all to
    one route, when it is SEQUENTIAL_MIN_RUN or more (the first such run on a tie), else
    None: a loop that awaits each call. Calls of different routes in turn are not one (they
    may be stages that need each other's answers)."""
    waves, routes = g.waves, m.structure_routes.get(g.name, [])
    if not waves or len(routes) < sum(waves):
        return None
    best, run, route, at = (0, ""), 0, "", 0
    for size in waves:
        first = routes[at]
        at += size
        if size != 1:
            run, route = 0, ""
            continue
        run, route = (run + 1, route) if run and first == route else (1, first)
        if run > best[0]:
            best = (run, route)
    return best if best[0] >= SEQUENTIAL_MIN_RUN else None


def _sequential_run(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    found = one_at_a_time(m, g)
    if found is None:
        return None
    count, route = found
    assert g.waves is not None  # one_at_a_time read them
    return Finding(
        "sequential",
        f"sequential: {count} calls of {route} made one at a time at {label} (held waves "
        f"{_waves_text(g.waves)}): "
        + _why_one_at_a_time(
            m,
            f"each awaited before the next, {count} rounds in turn; if the calls do not need "
            "each other's answers, gather them (bounded by a semaphore if need be) and they "
            "take one round",
        ),
        exact=True,
        short=f"sequential{_tag(m, g.name)}: {count} calls of {route} one at a time",
    )


def left_open(m: Measurement, g: UpstreamGauges) -> tuple[int, int | None] | None:
    """(new connections per sample at most, connections open at the end, or None when they
    did not pile up) when every sample after warm-up opened connections and closed none of
    them by its answer, and either every one stayed open to the end, more after every
    sample, or every call had a new one (none reused, even by the next request): a client
    built and never closed. None otherwise, or without the lifetimes (older data)."""
    triples = _paired(m, g)
    live = g.live_per_sample
    if len(triples) < 2 or len(live) != len(g.requests_per_sample) or _cancelled(g):
        return None
    if any(c < 1 or closed is None or closed > 0 for c, closed, _ in triples):
        return None
    tail = live[-len(triples) :]
    opened = [c for c, _, _ in triples]
    if all(tail[i] >= tail[i - 1] + opened[i] for i in range(1, len(tail))):
        return max(opened), live[-1]
    if all(c >= r for c, _, r in triples):
        return max(opened), None  # closed later, by whatever collected the client
    return None  # some closed later, some reused: a small pool, not a leak


def _leak(m: Measurement, g: UpstreamGauges, label: str) -> Finding | None:
    """Connections opened in every sample and never closed by the app (`left_open`)."""
    found = left_open(m, g)
    if found is None:
        return None
    most, still = found
    if still is not None:
        how = (
            f"all left open ({still} open at the end of the measurement, more after every "
            "sample): a client built and not closed (per request, call or retry attempt)"
        )
    else:
        how = (
            "none closed by the end of its request nor reused by the next: a client built "
            "per call and not closed (its connections close only when something collects it)"
        )
    return Finding(
        "connection-leak",
        f"connection leak: {most} new connections to {label} in every sample for "
        f"{g.requests} calls, {how}; build one client for the app's lifetime and share it, "
        "or close each one (`async with httpx.AsyncClient() as client:`)",
        exact=True,
        short=f"connection leak{_tag(m, g.name)}: {most} new per sample, never closed",
    )


def _buffered_stream(m: Measurement) -> Finding | None:
    """A streamed answer that waits for the upstreams' answers before its first byte, when
    their bytes spread wide enough for an earlier start to matter (BUFFERED_MIN_SPREAD_S,
    BUFFERED_MIN_SHARE). Calls that end apart: its first byte came after the last one's
    end in every sample (it waits for every call; one sent as each ends starts at the
    first's). Calls that end together cannot tell those apart: then its first byte came
    after the first one's end in every sample (it waits for whole answers, not relaying
    their pieces)."""
    first_bytes = m.first_byte_per_sample
    ups = (
        m.upstream_first_byte_per_sample,
        m.upstream_first_end_per_sample,
        m.upstream_last_byte_per_sample,
    )
    if not m.streamed or not ups[2] or any(len(v) != len(first_bytes) for v in ups):
        return None
    mine = statistics.median(first_bytes)
    first, first_end, last = (statistics.median(v) for v in ups)
    spread = last - first
    if spread < max(BUFFERED_MIN_SPREAD_S, BUFFERED_MIN_SHARE * mine):
        return None
    apart = min(b - a for a, b in zip(ups[1], ups[2], strict=True)) >= BUFFERED_MIN_SPREAD_S
    waited = ups[2] if apart else ups[1]
    if any(mine_s < end for mine_s, end in zip(first_bytes, waited, strict=True)):
        return None
    if apart:
        what = (
            f"after the upstreams' last byte at {_ms(last)}: the answer waits for every call "
            f"(in every sample; the upstreams' first byte came at {_ms(first)}). If its first "
            "pieces do not need every answer, send each piece as its call completes "
            "(asyncio.as_completed)"
        )
    else:
        calls = sum(m.upstream(name).requests for name in m.upstream_names)
        whose = "the upstream's whole answer" if calls == 1 else "whole upstream answers"
        what = (
            f"only once the upstreams' answers had ended ({_ms(first_end)} to {_ms(last)}; "
            f"their first byte came at {_ms(first)}): the answer waits for {whose} (in every "
            "sample). If it can, pass their pieces on as they come (stream the upstream "
            "call and yield each chunk)"
        )
    return Finding(
        "buffered-stream",
        f"buffered stream: {m.method} {m.path} is streamed, but its first byte came at "
        f"{_ms(mine)}, {what}: the first byte could come up to {_ms(spread)} sooner",
        exact=False,
        short=f"buffered stream: first byte {_ms(mine)}, after the upstreams' {_ms(last)}",
    )
