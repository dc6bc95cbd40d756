"""One Locust user class per fan-out pattern of the reference app.

    locust -f locustfiles/                     # SyncUser, AsyncUser, AsyncSemUser
    locust -f locustfiles/ AsyncUser           # one pattern
    locust -f locustfiles/ --tags async_sem    # the same, by tag
    locust -f locustfiles/ BlockingUser        # the anti-pattern: only when asked for

Each user calls its endpoint in a closed loop (no wait between requests), so
requests/s = users / latency: the async endpoint's throughput over the sync
one's is the fan-out speedup. A fan-out answered with a 200 whose `errors`
count is not zero is recorded as a failure: a partial answer is not a success.
"""

from __future__ import annotations

from typing import ClassVar

from _fanout_support import DEFAULT_MAX_CONCURRENT, DEFAULT_N, option
from locust import FastHttpUser, constant, tag, task


class FanoutUser(FastHttpUser):
    """The shared request-and-check logic; not run by itself."""

    abstract = True
    wait_time = constant(0)
    #: True: left out of the default set, run only when named or tagged.
    opt_in: ClassVar[bool] = False
    connection_timeout = 10.0
    network_timeout = 60.0

    @property
    def n(self) -> int:
        return int(option(self.environment, "fanout_n", DEFAULT_N))

    @property
    def max_concurrent(self) -> int:
        return int(option(self.environment, "fanout_max_concurrent", DEFAULT_MAX_CONCURRENT))

    def call(self, path: str) -> None:
        with self.client.get(path, name=path, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                errors = response.json()["errors"]
            except (ValueError, KeyError, TypeError):
                response.failure("the answer is not a fan-out answer (no 'errors')")
                return
            if errors.get("count"):
                first = "; ".join(errors.get("first", [])[:1])
                response.failure(f"{errors['count']} upstream calls failed: {first}")


class SyncUser(FanoutUser):
    """GET /sync/{n}: n calls one after another (a `def` route in the threadpool)."""

    @tag("sync")
    @task
    def sync(self) -> None:
        self.call(f"/sync/{self.n}")


class AsyncUser(FanoutUser):
    """GET /async/{n}: n calls at once with asyncio.gather."""

    @tag("async")
    @task
    def gather(self) -> None:
        self.call(f"/async/{self.n}")


class AsyncSemUser(FanoutUser):
    """GET /async_sem/{n}/{max_concurrent}: gather behind an asyncio.Semaphore."""

    @tag("async_sem")
    @task
    def bounded(self) -> None:
        self.call(f"/async_sem/{self.n}/{self.max_concurrent}")


class BlockingUser(FanoutUser):
    """GET /blocking/{n}: the ANTI-PATTERN (sync client in async def); opt-in only.

    It stalls the app's event loop, so mixing it into a run slows every other
    pattern down: it runs only when named (`BlockingUser`) or tagged (`--tags blocking`).
    """

    opt_in = True

    @tag("blocking")
    @task
    def blocking(self) -> None:
        self.call(f"/blocking/{self.n}")
