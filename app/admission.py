"""Admission control: a bound on the upstream calls one process has queued and in flight.

Without it the app takes any amount of work: 200 concurrent `/async/1000`
put 200,000 calls on one event loop, answers came long after their deadline
and the process grew past a gigabyte (issue 11). Here a request reserves its
n calls before anything else happens; when that would pass
FANOUT_MAX_PENDING_CALLS it is shed at once (the route answers 503 with
Retry-After) and costs next to nothing. An admitted request holds its n until
its answer is built, and its deadline counts from admission, so time spent
waiting for a thread, the semaphore or a pooled connection is inside it.

Reservations are made and released on the event loop; the counters are also
bumped from the threadpool (sync routes), hence the lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Ticket:
    """One admitted request: its calls and when its deadline started."""

    n: int
    started: float
    deadline_s: float

    def remaining_s(self) -> float:
        """What is left of the request's deadline (negative once it has passed)."""
        return self.deadline_s - (time.monotonic() - self.started)


class Admission:
    """The process's bound on pending upstream calls, and what it admitted and shed."""

    def __init__(self, max_pending_calls: int, deadline_s: float) -> None:
        self.max_pending_calls = max_pending_calls
        self.deadline_s = deadline_s
        self.pending_calls = 0
        self.admitted = 0
        self.shed = 0
        self.failed_calls = 0
        self.lock = threading.Lock()

    def admit(self, n: int) -> Ticket | None:
        """A ticket for n calls, or None (counted as shed) when they would pass the bound."""
        with self.lock:
            if self.pending_calls + n > self.max_pending_calls:
                self.shed += 1
                return None
            self.pending_calls += n
            self.admitted += 1
        return Ticket(n=n, started=time.monotonic(), deadline_s=self.deadline_s)

    def release(self, ticket: Ticket) -> None:
        with self.lock:
            self.pending_calls -= ticket.n

    def count_failed(self, calls: int) -> int:
        """Add failed upstream calls to the total; return the new total (for the log line)."""
        with self.lock:
            self.failed_calls += calls
            return self.failed_calls

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "pending_calls": self.pending_calls,
                "max_pending_calls": self.max_pending_calls,
                "admitted": self.admitted,
                "shed": self.shed,
                "failed_calls": self.failed_calls,
            }
