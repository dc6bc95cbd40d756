"""Helpers of the diagnose test app: the blocking calls live here, away from the routes,
as they do in a real service (the harness must still name this file and function)."""

import os

import httpx

#: A shared sync client: connections are reused, only the loop is blocked.
_SYNC = httpx.Client(timeout=10)


def load_rates() -> int:
    """Sync I/O: blocks the event loop for the upstream's whole delay."""
    return _SYNC.get(os.environ["FANOUT_UPSTREAM_URL"] + "/rates").status_code


def crunch() -> int:
    """CPU-bound: holds the loop with the app's own bytecode (no call to name)."""
    total = 0
    for i in range(6_000_000):
        total += i * i % 7
    return total
