"""A stub's rate limit (a token bucket) and its exact facts on repeated calls.

`TokenBucket`: `burst` tokens refilled at the limit's rate on `time.monotonic()`;
each call takes one, O(1), with no task or timer. A call that finds none is
answered 429 at once, with the headers real APIs send (`Retry-After`, and
OpenAI's `retry-after-ms` and `x-ratelimit-*-requests`), so SDKs that read them
back off as they would in production. The harness refills every bucket at each
gauge reset (each timed sample of `measure` starts alike); under Locust they
run on.

`Repeats`: per gauge epoch (one timed sample), the calls that repeat the method,
path, query and body of an earlier call (the call log's digest), and of those
the retries: the earlier one was answered 429 or 5xx, or cut off. For a retry of
a 429 it keeps how long after the 429 it came and the wait the 429 asked for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from pytest_fanout.limits import RATE_LIMIT_JITTER_S, default_burst, parse_rate

#: Distinct calls `Repeats` follows in one epoch (a sample); past it a new call counts as
#: distinct without being followed (`untracked`), so memory stays bounded under Locust.
MAX_TRACKED = 20_000
#: The float error allowed in adding refill intervals one by one (a share of one).
_EPSILON = 1e-9
#: Retry waits kept per epoch (the count of retries stays exact past it).
MAX_WAITS = 1_000


def asked_wait_s(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """The wait a 429 asks for, in seconds: `retry-after-ms` when given, else `Retry-After`
    (seconds; an HTTP date is not read); None when it asks for none."""
    after = None
    for name, value in headers:
        name = name.lower()
        try:
            if name == b"retry-after-ms":
                return max(0.0, float(value) / 1000)
            if name == b"retry-after":
                after = max(0.0, float(value))
        except ValueError:
            continue
    return after


def reset_text(seconds: float) -> str:
    """A wait as OpenAI's `x-ratelimit-reset-requests` writes it: "20ms", "1s", "6m0s"."""
    ms = max(1, math.ceil(seconds * 1000 - 1e-6))  # 0.9999999 s is "1s", not "1000ms"
    if ms < 1000:
        return f"{ms}ms"
    whole = math.ceil(ms / 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class TokenBucket:
    """`burst` tokens, refilled at `count` per `per_s` seconds; `take()` is O(1).

    Kept as the time the bucket is full again (`due`, the generic cell rate algorithm):
    a call may go when `due` is at most `burst - 1` refill intervals ahead of now (and
    RATE_LIMIT_JITTER_S: a paced client's calls reach it a varying hop late), and moves it
    one interval on. The same answers as counting tokens, in fewer steps on the stub's
    hot path."""

    __slots__ = ("burst", "clock", "count", "due", "interval", "rate", "slack", "text", "within")

    def __init__(
        self, text: str, burst: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.text = text
        self.count, per_s = parse_rate(text)
        self.rate = self.count / per_s
        self.interval = per_s / self.count
        self.burst = burst or default_burst(self.count, per_s)
        #: How far ahead of now `due` may be for a call to go: burst - 1 intervals, and a
        #: hair more for the float error of adding intervals one by one.
        self.slack = (self.burst - 1) * self.interval + self.interval * _EPSILON
        #: ... and how far a call may find it, arriving early by up to the jitter allowed.
        self.within = self.slack + RATE_LIMIT_JITTER_S
        self.clock = clock
        self.due = clock()

    def take(self) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is."""
        now = self.clock()
        due = self.due if self.due > now else now
        ahead = due - now
        if ahead > self.within:  # the wait it asks for is the whole one, not the jitter's
            return ahead - self.slack + self.interval * _EPSILON
        self.due = due + self.interval
        return 0.0

    @property
    def tokens(self) -> int:
        """Tokens left now (whole ones)."""
        ahead = max(self.due - self.clock(), 0.0)
        return max(0, min(self.burst, math.floor((self.slack - ahead) / self.interval) + 1))

    def refill(self) -> None:
        """Full again (a new sample starts alike)."""
        self.due = self.clock()

    def headers(self, wait_s: float) -> list[tuple[bytes, bytes]]:
        """A 429's headers: Retry-After in whole seconds (at least 1), retry-after-ms, and
        the limit, what remains and when the bucket is full again (OpenAI's shapes)."""
        full_s = max(self.due - self.clock(), 0.0)
        return [
            (b"retry-after", str(max(1, math.ceil(wait_s))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(wait_s * 1000))).encode()),
            (b"x-ratelimit-limit-requests", str(self.count).encode()),
            (b"x-ratelimit-remaining-requests", str(self.tokens).encode()),
            (b"x-ratelimit-reset-requests", reset_text(full_s).encode()),
        ]

    def describe(self) -> dict[str, Any]:
        return {"rate_limit": self.text, "per_s": self.rate, "burst": self.burst}


class Repeats:
    """Repeated calls and retries of one epoch, keyed by the call log's digest (`calllog.py`:
    a call is a list; [0] arrival, [1] end, [2] method, [3] path, [6] status, [7] digest,
    [9] cut, [10] the wait its 429 asked for)."""

    __slots__ = ("last", "most_retries", "repeated", "retries", "tries", "untracked", "waits")

    def __init__(self) -> None:
        #: digest -> the latest call with it.
        self.last: dict[int, list[Any]] = {}
        #: digest -> how many times that call was retried.
        self.tries: dict[int, int] = {}
        self.repeated = 0
        self.retries = 0
        self.untracked = 0
        self.most_retries = 0
        #: [method, path, asked_s or None, waited_s] for each retry of a 429 (bounded).
        self.waits: list[list[Any]] = []

    def arrive(self, call: list[Any]) -> None:
        digest = call[7]
        last = self.last.get(digest)
        if last is None:
            if len(self.last) < MAX_TRACKED:
                self.last[digest] = call
            else:
                self.untracked += 1
            return
        self.last[digest] = call
        self.repeated += 1
        status = last[6]
        if last[1] and (status == 429 or status >= 500 or not status or last[9]):
            tries = self.tries.get(digest, 0) + 1
            self.tries[digest] = tries
            self.retries += 1
            if tries > self.most_retries:
                self.most_retries = tries
            if status == 429 and len(self.waits) < MAX_WAITS:
                self.waits.append([call[2], call[3], last[10], call[0] - last[1]])

    @property
    def distinct(self) -> int:
        return len(self.last) + self.untracked

    def stats(self) -> dict[str, Any]:
        return {
            "retries": self.retries,
            "distinct": self.distinct,
            "most_retries": self.most_retries,
            "retry_waits": list(self.waits),
        }
