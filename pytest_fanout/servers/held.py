"""The harness's side of hold mode: arm the stubs, send, read the waves.

`StubUpstreamServer.hold()` (one upstream) and `hold_all()` (every upstream
of a stack, as the held probe of `measure` does) are context managers: the
stubs hold calls inside the block, and on leaving it the waves are read and
the hold ends (calls still held are answered, so nothing hangs). A hold that
reached one of its bounds raises `HoldBoundError` in one line.

Each upstream is its own process with its own hold. A request that calls two
upstreams at once, or one after the other, gets exact waves at each: the app
is idle while its calls wait at either stub, and a stub's hold starts with
the first call it gets, so a chain A then B cannot deadlock (B's wave begins
when A's answer let the app call B). Not exact: calls to B that the app makes
*because* A answered, while B still holds an earlier wave of the same
request, join B's wave or start the next one depending on which stub
released first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_fanout.limits import HELD_PACED_INTERVALS, HELD_PACED_MAX_MS
from pytest_fanout.servers.hold import HoldSettings


class Holdable(Protocol):
    """What a hold needs of a stub (`StubUpstreamServer` is one): its name, arm and disarm."""

    upstream_name: str

    def arm_hold(self, settings: Mapping[str, Any]) -> dict[str, Any]: ...

    def disarm_hold(self) -> dict[str, Any]: ...


class HoldBoundError(AssertionError):
    """A hold reached one of its bounds (calls held, or time a wave stayed open)."""


class AppNeverIdle(HoldBoundError):
    """The hold gave up on the app's idleness (`max_busy_s`): the app's process never went
    idle, so its waves cannot be told from its CPU; the request itself was answered."""


@dataclass
class HeldWaves:
    """What one stub saw in hold mode: the sizes of its waves, in order (filled on exit)."""

    upstream: str
    waves: list[int] = field(default_factory=list)
    #: The quiet window that closed the last wave (ms): what the hold waited at the end.
    last_quiet_ms: float = 0.0

    @property
    def peak(self) -> int:
        """The most calls the code had in flight at once at this upstream."""
        return max(self.waves, default=0)

    @property
    def calls(self) -> int:
        return sum(self.waves)

    @property
    def rounds(self) -> int:
        return len(self.waves)


def hold_settings(**given: float | None) -> dict[str, Any]:
    """The control body for the settings given, None left out (the stub's default): the
    names of `StubUpstreamServer.hold`'s keywords, which the stub checks (`HoldSettings`)."""
    return {name: value for name, value in given.items() if value is not None}


@contextmanager
def holding(stub: Holdable, settings: Mapping[str, Any]) -> Iterator[HeldWaves]:
    """Arm `stub`'s hold for the block; its waves are in the HeldWaves once the block ends."""
    __tracebackhide__ = True
    held = HeldWaves(stub.upstream_name)
    stub.arm_hold(dict(settings))
    failed = True
    try:
        yield held
        failed = False
    finally:
        report = stub.disarm_hold()
        held.waves = list(report.get("waves", []))
        held.last_quiet_ms = float(report.get("last_quiet_ms", 0.0))
        error = report.get("error")
        if error and not failed:
            kind = AppNeverIdle if report.get("never_idle") else HoldBoundError
            raise kind(f"upstream {stub.upstream_name!r} ended its hold: {error}")


def paced_hold(limits: Mapping[str, Any] | None) -> dict[str, float]:
    """The hold settings a stub with these limits in force (its stats' "limits") needs so
    that calls a rate limiter paces join one wave: its first wave of one call held
    HELD_PACED_INTERVALS of its slowest limit's interval (at most HELD_PACED_MAX_MS), and
    a quiet window allowed that long. {} for a stub with no rate limit."""
    if not limits:
        return {}
    routes = limits.get("routes") or {}
    rates = [limits.get("per_s")] + [route.get("per_s") for route in routes.values()]
    known = [float(rate) for rate in rates if rate]
    if not known:
        return {}
    window_ms = min(HELD_PACED_MAX_MS, HELD_PACED_INTERVALS * 1000 / min(known))
    return {
        "single_quiet_ms": window_ms,
        "quiet_max_ms": max(HoldSettings.quiet_max_ms, window_ms),
    }


def _limits_of(stub: Holdable) -> Mapping[str, Any] | None:
    """The stub's limits in force, or None for a stand-in without stats (a unit test's)."""
    stats = getattr(stub, "stats", None)
    return None if stats is None else stats().get("limits")


@contextmanager
def hold_all(
    stubs: Mapping[str, Holdable], settings: Mapping[str, Any]
) -> Iterator[dict[str, HeldWaves]]:
    """Arm every stub's hold for the block: {name: HeldWaves}, filled once the block ends.
    A rate-limited stub also holds a lone call long enough for a limiter's next one
    (`paced_hold`); the settings given win over it."""
    __tracebackhide__ = True
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(holding(stub, {**paced_hold(_limits_of(stub)), **settings}))
            for name, stub in stubs.items()
        }
