"""`Fanout`: what a test holds through the `fanout` fixture.

One object over the session's stack: measure a path, then assert on the
measurement. Every measurement is also reported to the plugin hook and kept
for the terminal summary and the regression gate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2

from pytest_fanout import assertions
from pytest_fanout.measure import Measurement, measure
from pytest_fanout.servers.stack import AppServer, StubUpstreamServer


class Fanout:
    """The facade of the `fanout` fixture."""

    def __init__(
        self,
        server: AppServer,
        upstream: StubUpstreamServer,
        *,
        test: str = "",
        on_measurement: Callable[[Measurement], None] | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.server = server
        self.upstream = upstream
        self.test = test
        self._on_measurement = on_measurement
        self._client = httpx2.Client(timeout=timeout_s)
        #: Takes `measure`'s place when set (same arguments): the gate's A/B mode
        #: (--fanout-ab) sets one that alternates samples between this app and the base's.
        self.sampler: Callable[..., Measurement] | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str, **kwargs: Any) -> httpx2.Response:
        """One plain GET to the app under test."""
        return self._client.get(self.server.url + path, **kwargs)

    def measure(
        self,
        path: str,
        repeat: int = 5,
        warmup: int = 1,
        *,
        n: int | None = None,
        concurrency: int | None = None,
        expect_status: int = 200,
    ) -> Measurement:
        """Time `path` `repeat` times after `warmup` untimed calls, with exact upstream counts.

        `n` and `concurrency` give the ideal time for paths the harness cannot
        read them from (the reference app's paths are understood).
        """
        result = (self.sampler or measure)(
            self._client,
            self.server.url,
            path,
            upstream=self.upstream,
            app=self.server,
            repeat=repeat,
            warmup=warmup,
            n=n,
            concurrency=concurrency,
            expect_status=expect_status,
        )
        result.test = self.test
        if self._on_measurement is not None:
            self._on_measurement(result)
        return result

    def assert_speedup(self, fast: Measurement, slow: Measurement, at_least: float) -> float:
        """`fast` at least `at_least` times faster than `slow` (medians, same run)."""
        return assertions.assert_speedup(fast, slow, at_least)

    def assert_concurrency(
        self,
        m: Measurement,
        peak: int | None = None,
        *,
        at_most: int | None = None,
        requests: int | None = None,
    ) -> None:
        """Exactly `peak` in flight at the upstream, at most `at_most`, `requests` in all."""
        assertions.assert_concurrency(m, peak, at_most=at_most, requests=requests)

    def assert_no_blocking(self, m: Measurement, max_lag_s: float | None = None) -> None:
        """No event-loop stall longer than `max_lag_s` (default: half the upstream delay)."""
        assertions.assert_no_blocking(m, max_lag_s)

    def close(self) -> None:
        self._client.close()
