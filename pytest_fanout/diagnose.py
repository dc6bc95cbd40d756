"""What is wrong with a fan-out, read off one Measurement: a list of findings.

Each finding has a `kind`, a one-line `message` and whether the harness
decided it `exact`ly (from counts: requests, peaks, connections, 429s) or
from timing (then the message gives its margin). In order of importance:

- `blocks-loop`: the app's event loop stalled beyond the blocking limit; where
  (the user's line and the call it was in, from the probe's stack sampler);
- `sequential`: never more than one call in flight at an upstream though the
  path's concurrency says more;
- `no-connection-reuse`: a new connection for every call (a client per request?);
- `connection-churn`: new connections in every sample after warm-up, fewer than
  the calls (a keep-alive pool smaller than the fan-out);
- `pool-cap`: the same peak in flight in every sample, below what the path asked
  for (a connection-pool limit: httpx and aiohttp both default to 100);
- `upstream-429` / `upstream-errors`: the upstream refused or failed calls.

A healthy fan-out gets none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_fanout.assertions import lag_limit
from pytest_fanout.measure import Measurement
from pytest_fanout.servers.callstacks import describe_stall, longest_stall

KINDS = (
    "blocks-loop",
    "sequential",
    "no-connection-reuse",
    "connection-churn",
    "pool-cap",
    "upstream-429",
    "upstream-errors",
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
    """Every finding for `m`, the most important first; [] for a healthy fan-out."""
    findings: list[Finding] = []
    blocked = _blocks_loop(m)
    if blocked is not None:
        findings.append(blocked)
    for gauges in _upstreams(m):
        label = _label(m, gauges.name)
        checks = [_no_reuse, _churn, _pool_cap, _rejected, _errors]
        if blocked is None:
            # A blocked loop serialises the calls itself: "sequential" would say it twice.
            checks.insert(0, _sequential)
        for check in checks:
            finding = check(m, gauges, label)
            if finding is not None:
                findings.append(finding)
    findings.sort(key=lambda f: KINDS.index(f.kind))
    return findings


def finding_for(m: Measurement, *kinds: str) -> Finding | None:
    """The most important finding of one of `kinds` (all kinds when none given), or None."""
    for finding in diagnose(m):
        if not kinds or finding.kind in kinds:
            return finding
    return None


def headline(m: Measurement) -> str:
    """The most important finding in a few words, for a table cell; '-' when healthy."""
    findings = diagnose(m)
    if not findings:
        return "-"
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    return findings[0].cell + more


def where_blocked(m: Measurement) -> str | None:
    """`file:line in function -> call` of the longest stall the sampler caught, or None."""
    stall = longest_stall(m.stalls)
    return None if stall is None else describe_stall(stall)


# ---- the checks --------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _blocks_loop(m: Measurement) -> Finding | None:
    if not m.loop_lag_per_sample:
        return None
    limit = lag_limit(m)
    lag = m.loop_lag_max_s
    if lag <= limit:
        return None
    where = where_blocked(m) or "no stack (the stack sampler is off, or caught nothing)"
    return Finding(
        "blocks-loop",
        f"blocks the loop: {where} (stalled {_ms(lag)}, {lag / limit:.1f}x the {_ms(limit)} limit)",
        exact=False,
        short=f"blocks the loop: {where}",
    )


def _upstreams(m: Measurement) -> list[Any]:
    names = getattr(m, "upstream_names", [])  # a Measurement saved before named upstreams
    return [m.upstream(name) for name in names]


def _label(m: Measurement, name: str) -> str:
    return "the upstream" if len(m.upstream_names) == 1 else f"upstream {name!r}"


def _tag(m: Measurement, name: str) -> str:
    """` (name)` in a short text, when the stack has several upstreams."""
    return "" if len(m.upstream_names) == 1 else f" ({name})"


def _sequential(m: Measurement, g: Any, label: str) -> Finding | None:
    wanted = m.concurrency or 0
    if wanted <= 1 or not g.peak_per_sample:
        return None
    if min(g.requests_per_sample) < 2 or max(g.peak_per_sample) != 1:
        return None
    return Finding(
        "sequential",
        f"sequential: {g.requests} calls to {label} went one at a time (peak 1 in every "
        f"sample) though {m.path} asks for concurrency {wanted}: an `await` in a loop?",
        exact=True,
        short=f"sequential{_tag(m, g.name)}: peak 1 of {wanted}",
    )


def _paired(m: Measurement, g: Any) -> list[tuple[int, int]]:
    """(connections, requests) per sample after warm-up, when the connection gauge covers
    every sample; without a warm-up call the first sample opens the pool, so it is left out."""
    if not g.requests_per_sample or len(g.connections_per_sample) != len(g.requests_per_sample):
        return []
    pairs = list(zip(g.connections_per_sample, g.requests_per_sample, strict=True))
    return pairs if m.warmup else pairs[1:]


def _no_reuse(m: Measurement, g: Any, label: str) -> Finding | None:
    pairs = _paired(m, g)
    if not pairs or any(r < 2 or c < r for c, r in pairs):
        return None
    return Finding(
        "no-connection-reuse",
        f"no connection reuse: a new connection for every call to {label} ({g.connections_opened} "
        f"for {g.requests} calls in a sample): a client built per request or per call?",
        exact=True,
        short=f"no connection reuse{_tag(m, g.name)}: {g.connections_opened} new for "
        f"{g.requests} calls",
    )


def _churn(m: Measurement, g: Any, label: str) -> Finding | None:
    pairs = _paired(m, g)
    if not pairs or any(not 0 < c < r for c, r in pairs):
        return None
    low, high = min(c for c, _ in pairs), max(c for c, _ in pairs)
    opened = str(high) if low == high else f"{low}-{high}"
    return Finding(
        "connection-churn",
        f"connection churn: {opened} new connections to {label} in every sample after "
        f"warm-up, for {g.requests} calls: a keep-alive pool smaller than the fan-out?",
        exact=True,
        short=f"connection churn{_tag(m, g.name)}: {opened} new for {g.requests} calls",
    )


def _pool_cap(m: Measurement, g: Any, label: str) -> Finding | None:
    if m.n is None or m.concurrency is None or g.rejected:
        return None  # a stub that answers 429 caps the peak itself
    asked = min(m.n, m.concurrency)
    peaks = g.peak_per_sample
    if len(peaks) < 2 or len(set(peaks)) != 1 or min(g.requests_per_sample) < asked:
        return None
    peak = peaks[0]
    if not 1 < peak < asked:
        return None
    return Finding(
        "pool-cap",
        f"pool cap: at most {peak} calls in flight at {label} in every sample, though "
        f"{m.path} asks for {asked} at once: a connection-pool limit (httpx and aiohttp "
        "default to 100)?",
        exact=True,
        short=f"pool cap{_tag(m, g.name)}: peak {peak} of {asked}",
    )


def _rejected(m: Measurement, g: Any, label: str) -> Finding | None:
    if not g.rejected:
        return None
    total = sum(g.requests_per_sample)
    return Finding(
        "upstream-429",
        f"upstream 429: {label} refused {g.rejected} of {total} calls with 429 (too many in "
        "flight): no backpressure? bound the fan-out (a semaphore) or retry with backoff",
        exact=True,
        short=f"upstream 429{_tag(m, g.name)}: {g.rejected} of {total} calls",
    )


def _errors(m: Measurement, g: Any, label: str) -> Finding | None:
    if not g.errors:
        return None
    total = sum(g.requests_per_sample)
    return Finding(
        "upstream-errors",
        f"upstream errors: {label} answered {g.errors} of {total} calls with an error status",
        exact=True,
        short=f"upstream errors{_tag(m, g.name)}: {g.errors} of {total} calls",
    )
