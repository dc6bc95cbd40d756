"""Findings read off a waterfall, each with the milliseconds at stake.

- `repeated-call`: the same request (method, path, query, body) made more than
  once in one request: a cache would save the repeats. A retry (a repeat that
  started after an identical call was answered 429 or 5xx, or cut off) is not one:
  no cache saves it (diagnosis.py judges retries: `retry-storm`, ...);
- `paid-repeatedly`: an upstream waited for in several rounds one after the
  other: up to all but the longest round is at stake if they went together, a
  bound that holds only if its calls do not need each other's answers (tested
  by `tested_findings`: its answers are changed and its calls compared; calls
  that use them are not a finding); retries are left out;
- `sequential-calls`: a call to another upstream that started only after the
  previous group ended. Both halves are tested, not guessed (`independence`):
  does it wait (slowed, does the first group move the second's start?), and
  does it need the answer (the first upstream's answers are changed and the
  second call's request compared with two unchanged runs)? Only a call that
  waits for an answer it does not use is "independent"; the waterfall alone
  says "maybe".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_fanout.servers.calllog import route_key
from pytest_fanout.timeline.calls import Call, RequestTimeline, request_timeline, set_experiment
from pytest_fanout.timeline.groups import Group, rounds


class Waterfall(Protocol):
    """What the findings read off a waterfall (`timeline.waterfall.Waterfall` is one): the
    request's calls, their groups, its title and the upstreams in order of first call."""

    timeline: RequestTimeline
    groups: list[Group]
    title: str

    @property
    def upstreams(self) -> list[str]: ...


@dataclass(frozen=True)
class TimelineFinding:
    """One thing the waterfall shows, and what fixing it could save."""

    kind: str
    message: str
    #: Milliseconds of the request's time at stake (0 when only calls would be saved).
    ms_at_stake: float
    #: Decided by an experiment or exact counts (True), or read off one waterfall (False).
    tested: bool

    def __str__(self) -> str:
        return self.message


#: Statuses after which a repeat of the same call is a retry, not a redundant call.
RETRIED_STATUSES = frozenset({429}) | frozenset(range(500, 600))


def is_retry(call: Call, earlier: list[Call], duration_s: float) -> bool:
    """Did `call` repeat one of `earlier` (same digest) that had failed before it started:
    answered 429 or 5xx, or cut off (no status, ended before the request did)?"""
    for before in earlier:
        if before.digest != call.digest or before.end_s > call.start_s:
            continue
        if before.status in RETRIED_STATUSES:
            return True
        if before.status == 0 and before.end_s < duration_s:
            return True
    return False


def retries_of(calls: list[Call], duration_s: float) -> list[Call]:
    """The calls of one request that are retries of a failed identical call (in order)."""
    return [c for i, c in enumerate(calls) if is_retry(c, calls[:i], duration_s)]


def repeated_calls(waterfall: Waterfall) -> list[TimelineFinding]:
    """Identical requests (same digest) made more than once in one request; retries of a
    call answered 429 or 5xx (or cut off) are left out: a cache would not save them."""
    findings = []
    timeline = waterfall.timeline
    retried = {id(c) for c in retries_of(timeline.calls, timeline.duration_s)}
    calls = [c for c in timeline.calls if id(c) not in retried]
    counts = Counter(c.digest for c in calls)
    for digest, count in counts.items():
        if count < 2:
            continue
        same = [c for c in calls if c.digest == digest]
        first = same[0]
        # Repeats that started after an identical call had ended lengthened the request.
        serial = [c for c in same[1:] if c.start_s >= first.end_s]
        at_stake = sum(c.duration_s for c in serial) * 1000
        findings.append(
            TimelineFinding(
                "repeated-call",
                f"{first.upstream} {first.method} {first.path}: the same request {count} times "
                f"in one call of {waterfall.title}; a cache would save {count - 1} call(s) and "
                f"{at_stake:.1f} ms",
                at_stake,
                True,
            )
        )
    return findings


def paid_repeatedly(
    waterfall: Waterfall, verdicts: Mapping[str, str] | None = None
) -> list[TimelineFinding]:
    """Upstreams the request waited for in more than one round, one after the other. The
    saving is a bound unless `verdicts` (upstream -> `rounds_independence`'s answer) says
    its calls do not need each other's answers; an upstream whose calls do is left out.
    A retry of a failed call is not a round that could have gone with the others."""
    findings = []
    timeline = waterfall.timeline
    retried = {id(c) for c in retries_of(timeline.calls, timeline.duration_s)}
    for upstream in waterfall.upstreams:
        mine = [c for c in timeline.calls if c.upstream == upstream and id(c) not in retried]
        spans = rounds(mine)
        if len(spans) < 2:
            continue
        lengths = [b - a for a, b in spans]
        at_stake = (sum(lengths) - max(lengths)) * 1000
        verdict = (verdicts or {}).get(upstream)
        if verdict is not None and verdict.startswith("it uses"):
            continue  # waiting for answers the calls need is not a finding
        paid = f"{upstream}: paid {len(spans)} times in turn in one call of {waterfall.title}"
        if verdict == "independent":
            text = (
                f"{paid} ({len(mine)} call(s)), and its calls do not need each other's answers "
                f"(they asked the same when its answers changed): in one round it would save "
                f"up to {at_stake:.1f} ms"
            )
        else:
            why = "untested" if verdict is None else verdict
            text = (
                f"{paid} ({len(mine)} call(s)); if its calls do not need each other's answers, "
                f"in one round it would save up to {at_stake:.1f} ms (a bound: {why})"
            )
        findings.append(TimelineFinding("paid-repeatedly", text, at_stake, verdict is not None))
    return findings


def rounds_independence(
    send: Send, upstreams: Mapping[str, Any], waterfall: Waterfall, upstream: str
) -> str:
    """ "independent" when `upstream`'s calls ask the same with its JSON answers changed
    (one run) as in two unchanged runs; "it uses its own answers ..." when they change;
    else why it could not be told."""
    method, path = waterfall.timeline.method, waterfall.timeline.path

    def asked(timeline: RequestTimeline) -> list[str]:
        return sorted(c.digest for c in timeline.calls if c.upstream == upstream)

    unchanged = []
    for _ in range(2):
        sent, answered = send()
        unchanged.append(asked(request_timeline(upstreams, method, path, sent, answered)))
    if unchanged[0] != unchanged[1]:
        return f"cannot tell: {upstream}'s requests change from run to run"
    stub = upstreams[upstream]
    set_experiment(stub, perturb=True, perturb_route="")
    try:
        try:
            sent, answered = send()
        except AssertionError as exc:  # the app failed on the changed answers
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"cannot tell: the app failed when {upstream}'s answers changed ({first})"
        changed = request_timeline(upstreams, method, path, sent, answered)
    finally:
        set_experiment(stub, perturb=False, perturb_route="")
    if not any(c.perturbed for c in changed.calls if c.upstream == upstream):
        return f"cannot tell: {upstream}'s answers have no number or string to change"
    if asked(changed) != unchanged[0]:
        return (
            f"it uses its own answers: {upstream}'s later requests changed when its answers changed"
        )
    return "independent"


def sequential_pairs(waterfall: Waterfall) -> list[tuple[Group, Group]]:
    """(earlier, later) groups of different upstreams where `earlier` is the last to end
    before `later` started: `later` may have waited for it (`independence` tests whether
    it did). Two groups started together after one (a gather) make two pairs."""
    pairs = []
    for later in sorted(waterfall.groups, key=lambda g: g.start_s):
        ended = [g for g in waterfall.groups if g is not later and g.end_s <= later.start_s]
        if not ended:
            continue
        earlier = max(ended, key=lambda g: g.end_s)
        if earlier.upstream != later.upstream:
            pairs.append((earlier, later))
    return pairs


def static_findings(waterfall: Waterfall) -> list[TimelineFinding]:
    """Everything one waterfall shows without an experiment, the most ms first."""
    findings = repeated_calls(waterfall) + paid_repeatedly(waterfall)
    for earlier, later in sequential_pairs(waterfall):
        findings.append(_sequential(waterfall, earlier, later, None))
    return sorted(findings, key=lambda f: -f.ms_at_stake)


def _sequential(
    waterfall: Waterfall, earlier: Group, later: Group, verdict: str | None
) -> TimelineFinding:
    at_stake = min(earlier.duration_s, later.duration_s) * 1000
    what = f"{later.label} started after {earlier.label} had ended in {waterfall.title}"
    if verdict is None:
        return TimelineFinding(
            "sequential-calls",
            f"{what}; if it does not need that answer, running them together saves up to "
            f"{at_stake:.1f} ms (untested: fanout.timeline_findings(...) tests it)",
            at_stake,
            False,
        )
    if verdict == "independent":
        text = (
            f"{what}, and does not need its answer (its request stayed the same when "
            f"{earlier.upstream}'s answers changed): running them together saves {at_stake:.1f} ms"
        )
        return TimelineFinding("sequential-calls", text, at_stake, True)
    return TimelineFinding("sequential-calls", f"{what}; {verdict}", 0.0, True)


#: Sends the request once; returns (sent, answered) on time.monotonic().
Send = Callable[[], tuple[float, float]]


def _requests_of(timeline: RequestTimeline, group: Group) -> list[str]:
    """The digests of the calls of `group`'s kind, in order: what it asked."""
    return sorted(c.digest for c in timeline.calls if c.key == group.calls[0].key)


def independence(
    send: Send,
    upstreams: Mapping[str, Any],
    waterfall: Waterfall,
    earlier: Group,
    later: Group,
) -> str:
    """ "independent", or why not / why it could not be told. First, does `later` wait for
    `earlier` at all (`_waits`: slowed, does its start move)? Then `earlier`'s JSON answers
    are changed for one run and what `later` asked compared with two unchanged runs."""
    method, path = waterfall.timeline.method, waterfall.timeline.path
    unchanged = []
    for _ in range(2):
        sent, answered = send()
        unchanged.append(request_timeline(upstreams, method, path, sent, answered))
    asked = [_requests_of(t, later) for t in unchanged]
    if asked[0] != asked[1]:
        return (
            f"cannot tell whether it needs {earlier.upstream}'s answer: "
            f"{later.upstream}'s requests change from run to run"
        )
    stub = upstreams[earlier.upstream]
    target = route_key(earlier.method, earlier.route)
    if not _waits(send, upstreams, waterfall, earlier, later, unchanged):
        return (
            f"it does not wait for {earlier.upstream} (its start did not move when "
            f"{earlier.upstream} was slowed): it came after by chance, not a finding"
        )
    set_experiment(stub, perturb=True, perturb_route=target)
    try:
        try:
            sent, answered = send()
        except AssertionError as exc:  # the app failed on the changed answers
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return (
                f"cannot tell: the app failed when {earlier.upstream}'s answers changed ({first})"
            )
        changed = request_timeline(upstreams, method, path, sent, answered)
    finally:
        set_experiment(stub, perturb=False, perturb_route="")
    if not any(c.perturbed for c in changed.calls if c.upstream == earlier.upstream):
        return f"cannot tell: {earlier.upstream}'s answers have no number or string to change"
    if _requests_of(changed, later) != asked[0]:
        return (
            f"it uses {earlier.upstream}'s answer (its request changed when that answer "
            "changed): not a finding"
        )
    return "independent"


#: How much the wait test slows each call of the earlier group (ms): its longest call's
#: time, at least WAIT_TEST_MS (over the noise), at most MAX_WAIT_TEST_MS.
WAIT_TEST_MS = 30.0
MAX_WAIT_TEST_MS = 200.0


def _start_of(timeline: RequestTimeline, group: Group) -> float | None:
    """When the first call of `group`'s kind started in `timeline` (s), None if none came."""
    starts = [c.start_s for c in timeline.calls if c.key == group.calls[0].key]
    return min(starts) if starts else None


def _waits(
    send: Send,
    upstreams: Mapping[str, Any],
    waterfall: Waterfall,
    earlier: Group,
    later: Group,
    unchanged: list[RequestTimeline],
) -> bool:
    """Does `later` start only once `earlier` has answered? Slow each call of `earlier`
    down (two runs) and see whether `later`'s start moves by at least half of that (a call
    that came after by chance, in a branch of its own, does not move)."""
    longest_ms = max(c.duration_s for c in earlier.calls) * 1000
    extra = min(max(WAIT_TEST_MS, longest_ms), MAX_WAIT_TEST_MS)
    stub = upstreams[earlier.upstream]
    method, path = waterfall.timeline.method, waterfall.timeline.path
    slowed = []
    set_experiment(stub, extra_ms=extra, extra_route=route_key(earlier.method, earlier.route))
    try:
        for _ in range(2):
            sent, answered = send()
            slowed.append(request_timeline(upstreams, method, path, sent, answered))
    finally:
        set_experiment(stub, extra_ms=0.0, extra_route="")
    before = [s for s in (_start_of(t, later) for t in unchanged) if s is not None]
    after = [s for s in (_start_of(t, later) for t in slowed) if s is not None]
    if len(before) < len(unchanged) or len(after) < len(slowed):
        return True  # the later call changed with the timing: it depends on it somehow
    # The earliest of each side: a loaded machine only ever adds time.
    return min(after) - min(before) >= extra / 2000


def tested_findings(
    send: Send, upstreams: Mapping[str, Any], waterfall: Waterfall
) -> list[TimelineFinding]:
    """static_findings, with every sequential pair tested by `independence` and every
    upstream paid in rounds by `rounds_independence` (dependent ones are left out: waiting
    for data one needs is not a finding)."""
    verdicts = {
        upstream: rounds_independence(send, upstreams, waterfall, upstream)
        for upstream in waterfall.upstreams
        if len(rounds([c for c in waterfall.timeline.calls if c.upstream == upstream])) > 1
    }
    findings = repeated_calls(waterfall) + paid_repeatedly(waterfall, verdicts)
    for earlier, later in sequential_pairs(waterfall):
        verdict = independence(send, upstreams, waterfall, earlier, later)
        if verdict.startswith(("it uses", "it does not wait")):
            continue
        findings.append(_sequential(waterfall, earlier, later, verdict))
    return sorted(findings, key=lambda f: -f.ms_at_stake)
