"""Thresholds on a Locust run, as pure functions of its numbers.

`pytest_fanout.locust` applies them when Locust quits (on the master only); the
unit tests check them without a run. A violation is one line that names the
threshold, its limit and the measured value.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_fanout import limits
from pytest_fanout.limits import fraction
from pytest_fanout.load.results import TOTAL_NAME, EndpointResult

#: Requests (or scheduled starts) before `--fanout-abort-on-fail` may end a run.
DEFAULT_ABORT_AFTER = 100

#: Every threshold line starts with this, so a CI log and `run_locust` can find them.
VIOLATION_PREFIX = "fanout: threshold violated: "


@dataclass(frozen=True)
class Violation:
    """One threshold that one row broke."""

    option: str
    metric: str
    endpoint: str
    limit: float
    value: float
    unit: str = ""

    def line(self) -> str:
        """One line naming the threshold, its limit and the measured value."""
        return (
            f"{VIOLATION_PREFIX}{self.option} {_fmt(self.limit)}{self.unit}: "
            f"{self.metric} of {self.endpoint} is {_fmt(self.value)}{self.unit}"
        )


def _fmt(value: float) -> str:
    return f"{value:.4g}" if value < 10 else f"{value:.1f}".removesuffix(".0")


#: Each threshold: (field, command-line flag, argparse dest, type). The dests are what
#: Locust's web UI turns into a label ("fanout_max_latency_ms" -> "Fanout Max Latency
#: Ms"), so they are words, not digits ("p95" would read "P9 5").
OPTIONS: tuple[tuple[str, str, str, Any], ...] = (
    ("max_fail_ratio", "--fanout-max-fail-ratio", "fanout_max_failure_ratio", fraction),
    ("max_p95_ms", "--fanout-max-p95-ms", "fanout_max_latency_ms", limits.delay_ms),
    ("min_rps", "--fanout-min-rps", "fanout_min_throughput", limits.threshold_rate),
    ("min_completed", "--fanout-min-completed", "fanout_min_completed", limits.threshold_count),
)

#: The open model's threshold (`load/arrival.py` registers its option).
_DROPPED = ("max_dropped_ratio", "--fanout-max-dropped-ratio", "fanout_max_dropped_ratio", fraction)

#: Zero is not a pass: by default every endpoint and the total must complete one request.
DEFAULT_MIN_COMPLETED = 1


@dataclass(frozen=True)
class Thresholds:
    """Limits applied to every endpoint and to the total; None means "not checked".

    `min_completed` (requests answered without failure) is always checked: a run in
    which an endpoint, or the whole run, completed nothing has not passed.
    """

    max_fail_ratio: float | None = None
    max_p95_ms: float | None = None
    min_rps: float | None = None
    min_completed: int = DEFAULT_MIN_COMPLETED
    #: Open model only: the most starts that may be dropped (no user free in time), a ratio.
    #: Its option is registered by `load/arrival.py`, so it is not in OPTIONS.
    max_dropped_ratio: float | None = None

    @classmethod
    def from_options(cls, options: Any) -> Thresholds:
        """From Locust's parsed options; values typed in the web UI arrive as strings."""

        def read(flag: str, dest: str, kind: Any) -> Any:
            raw = getattr(options, dest, None)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                return None
            try:
                return kind(str(raw).strip())
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"{flag}: {exc}") from None

        values = {field: read(flag, dest, kind) for field, flag, dest, kind in OPTIONS}
        if values["min_completed"] is None:
            values["min_completed"] = DEFAULT_MIN_COMPLETED
        values["max_dropped_ratio"] = read(*_DROPPED[1:])
        return cls(**values)

    @property
    def active(self) -> bool:
        """True when a limit beyond the built-in "at least one completed request" is set."""
        limits = (self.max_fail_ratio, self.max_p95_ms, self.min_rps, self.max_dropped_ratio)
        return any(v is not None for v in limits)

    def describe(self) -> str:
        parts = [
            f"{flag} {_fmt(getattr(self, field))}"
            for field, flag, _dest, _kind in (*OPTIONS, _DROPPED)
            if getattr(self, field) is not None
        ]
        return ", ".join(parts)

    def check(self, rows: Iterable[EndpointResult]) -> list[Violation]:
        """Every violation, endpoint rows first, then the total."""
        found = []
        for row in rows:
            label = row.key if row.name != TOTAL_NAME else "all endpoints (total)"
            completed = row.requests - row.failures
            if completed < self.min_completed:
                found.append(
                    Violation(
                        "--fanout-min-completed",
                        "completed requests",
                        label,
                        self.min_completed,
                        completed,
                    )
                )
            if self.max_fail_ratio is not None and row.fail_ratio > self.max_fail_ratio:
                found.append(
                    Violation(
                        "--fanout-max-fail-ratio",
                        "failure ratio",
                        label,
                        self.max_fail_ratio,
                        row.fail_ratio,
                    )
                )
            if self.max_p95_ms is not None and row.p95_ms > self.max_p95_ms:
                found.append(
                    Violation(
                        "--fanout-max-p95-ms", "p95", label, self.max_p95_ms, row.p95_ms, " ms"
                    )
                )
            if self.min_rps is not None and row.rps < self.min_rps:
                found.append(
                    Violation("--fanout-min-rps", "requests/s", label, self.min_rps, row.rps, "/s")
                )
        return found

    def to_args(self) -> list[str]:
        args = []
        for field, flag, _dest, _kind in (*OPTIONS, _DROPPED):
            value = getattr(self, field)
            if value is None or (field == "min_completed" and value == DEFAULT_MIN_COMPLETED):
                continue
            args += [flag, repr(value)]
        return args

    def check_dropped(self, scheduled: int, dropped: int) -> list[Violation]:
        """The open model's dropped starts against --fanout-max-dropped-ratio (a run total)."""
        if self.max_dropped_ratio is None or not scheduled:
            return []
        ratio = dropped / scheduled
        if ratio <= self.max_dropped_ratio:
            return []
        return [
            Violation(
                "--fanout-max-dropped-ratio",
                "dropped-start ratio",
                "the arrival schedule",
                self.max_dropped_ratio,
                ratio,
            )
        ]

    def already_lost(
        self,
        *,
        requests: int,
        failures: int,
        scheduled: int = 0,
        dropped: int = 0,
        after: int = DEFAULT_ABORT_AFTER,
    ) -> str | None:
        """For --fanout-abort-on-fail: why the run is lost already (one phrase), or None.

        The failure ratio once `after` requests were made, the dropped-start
        ratio once `after` starts were scheduled; p95 and requests/s can still
        recover, so they are judged at the end only.
        """
        limit = self.max_fail_ratio
        if limit is not None and requests >= after and failures / requests > limit:
            return (
                f"--fanout-max-fail-ratio {_fmt(limit)}: failure ratio "
                f"{_fmt(failures / requests)} after {requests} requests"
            )
        limit = self.max_dropped_ratio
        if limit is not None and scheduled >= after and dropped / scheduled > limit:
            return (
                f"--fanout-max-dropped-ratio {_fmt(limit)}: dropped-start ratio "
                f"{_fmt(dropped / scheduled)} after {scheduled} scheduled starts"
            )
        return None
