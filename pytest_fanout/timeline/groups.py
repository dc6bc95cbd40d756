"""Calls folded into groups, and the app's own time between them.

200 calls are unreadable one per line; a group is calls of one kind
(upstream, method, route) that ran together or one right after the other
with nothing else between. A new group starts when a call of that kind
comes after a call of another kind had started and the earlier group had
ended: that is a new round, which is what a reader needs to see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_fanout.timeline.calls import Call


@dataclass
class Group:
    """Calls of one kind in one round."""

    upstream: str
    method: str
    route: str
    calls: list[Call] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.calls)

    @property
    def start_s(self) -> float:
        return min(c.start_s for c in self.calls)

    @property
    def end_s(self) -> float:
        return max(c.end_s for c in self.calls)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def peak(self) -> int:
        """The most of its calls in flight at once."""
        return peak_in_flight(self.calls)

    @property
    def distinct(self) -> int:
        """How many different requests (by digest) its calls made."""
        return len({c.digest for c in self.calls})

    @property
    def failed(self) -> int:
        return sum(1 for c in self.calls if not 200 <= c.status < 400)

    @property
    def label(self) -> str:
        text = f"{self.upstream} {self.method} {self.route}"
        return f"{text} x{self.count}" if self.count > 1 else text

    @property
    def note(self) -> str:
        """How its calls ran: "all at once", "one at a time", "at most 10 at once"."""
        if self.count == 1:
            return ""
        peak = self.peak
        if peak == self.count:
            how = "all at once"
        elif peak == 1:
            how = "one at a time"
        else:
            how = f"at most {peak} at once"
        if self.distinct < self.count:
            how += f", {self.count - self.distinct} repeated"
        return how


def peak_in_flight(calls: list[Call]) -> int:
    """The most calls in flight at one instant (an answer frees its slot before a start
    at the same instant takes one)."""
    events = sorted([(c.start_s, 1) for c in calls] + [(c.end_s, -1) for c in calls])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def group_calls(calls: list[Call]) -> list[Group]:
    """Groups in order of their first call (calls are in arrival order)."""
    groups: list[Group] = []
    latest: dict[tuple[str, str, str], Group] = {}
    for call in sorted(calls, key=lambda c: c.start_s):
        group = latest.get(call.key)
        joins = group is not None and (
            group is groups[-1] or call.start_s < group.end_s  # contiguous, or overlapping
        )
        if not joins:
            group = Group(call.upstream, call.method, call.route)
            groups.append(group)
            latest[call.key] = group
        assert group is not None
        group.calls.append(call)
    return groups


def app_alone(calls: list[Call], duration_s: float) -> list[tuple[float, float]]:
    """The stretches of [0, duration] when no upstream call was in flight: the app's own
    time (parsing, its own work, waiting for its loop), in order."""
    gaps = []
    covered_to = 0.0
    for call in sorted(calls, key=lambda c: c.start_s):
        if call.start_s > covered_to:
            gaps.append((covered_to, call.start_s))
        covered_to = max(covered_to, call.end_s)
    if duration_s > covered_to:
        gaps.append((covered_to, duration_s))
    return gaps


def rounds(calls: list[Call]) -> list[tuple[float, float]]:
    """Stretches when at least one of `calls` was in flight (time-disjoint clusters):
    how many times the request waited for them in turn."""
    spans: list[tuple[float, float]] = []
    for call in sorted(calls, key=lambda c: c.start_s):
        if spans and call.start_s < spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], call.end_s))
        else:
            spans.append((call.start_s, call.end_s))
    return spans
