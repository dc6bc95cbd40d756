"""Thresholds on a Locust run, as pure functions of its numbers.

`pytest_fanout.locust` applies them when Locust quits (on the master only); the
unit tests check them without a run. A violation is one line that names the
threshold, its limit and the measured value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_fanout.load.results import TOTAL_NAME, EndpointResult
from pytest_fanout.spec import OPTIONS

#: Requests (or scheduled starts) before `--fanout-abort-on-fail` may end a run.
DEFAULT_ABORT_AFTER: int = OPTIONS["abort_after"].default

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


#: The thresholds' options (declared in `pytest_fanout.spec.OPTIONS`, group "load"); each
#: is also a `Thresholds` field. `max_dropped_ratio` is the open model's (`load/arrival.py`).
THRESHOLD_KEYS = ("max_fail_ratio", "max_p95_ms", "min_rps", "min_completed", "max_dropped_ratio")
#: Their prefix: Locust's, as pytest's.
PREFIX = "fanout-"

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
    #: Its option is registered by `load/arrival.py`.
    max_dropped_ratio: float | None = None

    @classmethod
    def from_options(cls, options: Any) -> Thresholds:
        """From Locust's parsed options; values typed in the web UI arrive as strings."""

        def read(key: str) -> Any:
            option = OPTIONS[key]
            raw = getattr(options, option.dest, None)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                return None
            try:
                return option.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{option.flag(PREFIX)}: {exc}") from None

        values = {key: read(key) for key in THRESHOLD_KEYS}
        if values["min_completed"] is None:
            values["min_completed"] = DEFAULT_MIN_COMPLETED
        return cls(**values)

    @property
    def active(self) -> bool:
        """True when a limit beyond the built-in "at least one completed request" is set."""
        limits = (self.max_fail_ratio, self.max_p95_ms, self.min_rps, self.max_dropped_ratio)
        return any(v is not None for v in limits)

    def describe(self) -> str:
        parts = [
            f"{OPTIONS[key].flag(PREFIX)} {_fmt(getattr(self, key))}"
            for key in THRESHOLD_KEYS
            if getattr(self, key) is not None
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
        for key in THRESHOLD_KEYS:
            value = getattr(self, key)
            if value is None or (key == "min_completed" and value == DEFAULT_MIN_COMPLETED):
                continue
            args += [OPTIONS[key].flag(PREFIX), repr(value)]
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
