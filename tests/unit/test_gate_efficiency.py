"""Efficiency from the delays the stub really applied, not from the upstream's default delay.

A gather of 8 calls to a route whose own delay is 200 ms, on an upstream whose default is
100 ms: the ideal is 200 ms, so the efficiency of a 210 ms answer is about 0.95 (it read 0.46
when the ideal used the default). The stub counts what it applied; nothing here is timed.
"""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import Measurement
from pytest_fanout.servers.upstream import StubUpstream


async def _gather_on_a_slow_route(stub: StubUpstream) -> dict:
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=stub),
        base_url="http://stub",
        headers={"Authorization": f"Bearer {stub.token}"},
    ) as client:
        added = await client.post(
            "/__upstream__/routes", json={"method": "GET", "path": "/price/{i}", "delay_ms": 20}
        )
        assert added.status_code == 200, added.text
        await asyncio.gather(*(client.get(f"/price/{i}") for i in range(8)))
        await client.get("/other")  # the default delay (1 ms)
        return (await client.get("/__upstream__/stats")).json()


def test_the_stub_counts_the_delays_it_applied() -> None:
    stats = asyncio.run(_gather_on_a_slow_route(StubUpstream(Behaviour(delay_ms=1), token="t")))
    assert stats["requests"] == 9
    assert stats["delay_ms_max"] == 20
    assert stats["delay_ms_sum"] == pytest.approx(8 * 20 + 1)


def gauges(sums: list[float], peaks: list[float], requests: list[int]) -> dict:
    return {
        "default": {"requests": requests, "delay_ms_sum": sums, "delay_ms_max": peaks},
    }


def test_the_ideal_uses_the_route_delay_really_applied() -> None:
    m = Measurement(
        path="/basket/8",
        samples=[0.210, 0.212, 0.209],
        n=8,
        concurrency=8,
        upstream_delay_s=0.100,  # the upstream's default; the route's own delay is 200 ms
        upstream_gauges=gauges([1600.0] * 3, [200.0] * 3, [8] * 3),
    )
    assert m.ideal_s == pytest.approx(0.200)
    assert m.efficiency == pytest.approx(0.200 / 0.210)
    assert m.to_dict()["applied_delay_s"] == pytest.approx(0.200)


def test_waves_use_the_mean_applied_delay_and_old_data_the_configured_one() -> None:
    waves = Measurement(
        path="/sem/8/2",
        samples=[0.9],
        n=8,
        concurrency=2,
        upstream_delay_s=0.100,
        upstream_gauges=gauges([8 * 150.0], [150.0], [8]),
    )
    assert waves.ideal_s == pytest.approx(0.150 * 4)
    old = Measurement(path="/async/8", samples=[0.11], n=8, concurrency=8, upstream_delay_s=0.100)
    assert old.applied_delay_s is None and old.ideal_s == pytest.approx(0.100)
