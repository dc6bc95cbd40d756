"""Upper bounds of every load rate, count, size and duration an option takes.

A rate of 1e9 starts per second, a million workers or a year-long step is a
typing mistake, not a test: accepted, it grows a process until the kernel
kills it. Each bound here is far above any real run on one machine, and the
argparse types below refuse past it in one line that names the bound. The
README's "Limits" table lists them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pytest_fanout._argtypes import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = [
    "MAX_CALLS",
    "MAX_DELAY_MS",
    "MAX_DURATION_S",
    "MAX_GRACE_MS",
    "MAX_INFLIGHT",
    "MAX_PROCESSES",
    "MAX_RATE_RPS",
    "MAX_REPEAT",
    "MAX_THRESHOLD_COUNT",
    "MAX_USERS",
    "bounded",
    "check_load_run",
    "calls",
    "delay_ms",
    "duration_s",
    "grace_ms",
    "inflight",
    "latency_ms",
    "processes",
    "rate_rps",
    "repeats",
    "threshold_count",
    "threshold_rate",
    "users",
    "whole_seconds",
]

#: Requests (starts) per second: an open-model arrival rate, a capacity search's rates.
MAX_RATE_RPS = 100_000.0
#: Users (requests in flight) of one run or one step.
MAX_USERS = 100_000
#: Locust worker processes of one run.
MAX_PROCESSES = 256
#: Seconds of one run, one step or one search: a day.
MAX_DURATION_S = 86_400.0
#: Milliseconds of an upstream delay: an hour (the stub's own bound).
MAX_DELAY_MS = 3_600_000.0
#: Milliseconds a scheduled start may wait for a free user: ten minutes.
MAX_GRACE_MS = 600_000.0
#: Upstream calls per request, and a semaphore's bound (the reference app's own cap).
MAX_CALLS = 10_000
#: Timed requests of one measurement.
MAX_REPEAT = 10_000
#: A stub's cap on calls in flight (0 = no cap): its own bound.
MAX_INFLIGHT = 1_000_000
#: A count threshold (`--fanout-min-completed`).
MAX_THRESHOLD_COUNT = 10**12


def bounded(parse: Callable[[str], float], high: float, unit: str = "") -> Callable[[str], float]:
    """`parse`, then refuse a value above `high` in one line that names the bound."""

    shown = f"{int(high):,}" if high == int(high) else f"{high:,g}"

    def check(text: str) -> float:
        value = parse(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{text} is above the limit of {shown}{unit}")
        return value

    check.__name__ = getattr(parse, "__name__", "value")
    return check


rate_rps = bounded(positive_float, MAX_RATE_RPS, "/s")
threshold_rate = bounded(non_negative_float, MAX_RATE_RPS, "/s")
users = bounded(positive_int, MAX_USERS, " users")
processes = bounded(positive_int, MAX_PROCESSES, " processes")
duration_s = bounded(positive_float, MAX_DURATION_S, " s")
delay_ms = bounded(non_negative_float, MAX_DELAY_MS, " ms")
grace_ms = bounded(non_negative_float, MAX_GRACE_MS, " ms")
whole_seconds = bounded(positive_int, MAX_DURATION_S, " s")
latency_ms = bounded(positive_float, MAX_DELAY_MS, " ms")
calls = bounded(positive_int, MAX_CALLS)
repeats = bounded(positive_int, MAX_REPEAT)
inflight = bounded(non_negative_int, MAX_INFLIGHT)
threshold_count = bounded(positive_int, MAX_THRESHOLD_COUNT)


def check_load_run(
    *, users: int, spawn_rate: float, run_time_s: float, processes: int | None
) -> None:
    """A ValueError in one line when a Locust run's size is past a limit (or not positive)."""
    for name, value, high in (
        ("users", users, MAX_USERS),
        ("spawn_rate", spawn_rate, MAX_RATE_RPS),
        ("run_time_s", run_time_s, MAX_DURATION_S),
        ("processes", processes or 1, MAX_PROCESSES),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name}={value!r} must be a number > 0")
        if not value <= high:  # NaN fails here too
            raise ValueError(f"{name}={value!r} is above the limit of {high:,g}")
