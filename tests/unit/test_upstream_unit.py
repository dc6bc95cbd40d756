"""The stub upstream as an ASGI app, in-process: gauge, control paths, caps, overrides."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from pytest_fanout.servers.upstream import Behaviour, ConfigError, StubUpstream


def run(coro):
    return asyncio.run(coro)


async def _client(stub: StubUpstream) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=stub),
        base_url="http://stub",
        headers={"Authorization": f"Bearer {stub.token}"},
    )


def test_gauge_counts_requests_and_peak() -> None:
    stub = StubUpstream(Behaviour(delay_ms=20))

    async def scenario() -> dict:
        async with await _client(stub) as client:
            await asyncio.gather(*(client.get(f"/items/{i}") for i in range(6)))
            return (await client.get("/__upstream__/stats")).json()

    stats = run(scenario())
    assert stats["requests"] == 6
    assert stats["peak_inflight"] == 6
    assert stats["inflight"] == 0
    assert stats["completed"] == 6


def test_cap_answers_429_at_once() -> None:
    stub = StubUpstream(Behaviour(delay_ms=30, max_inflight=2))

    async def scenario() -> list[int]:
        async with await _client(stub) as client:
            answers = await asyncio.gather(*(client.get("/x") for _ in range(5)))
            return sorted(a.status_code for a in answers)

    assert run(scenario()) == [200, 200, 429, 429, 429]
    assert stub.gauge.rejected == 3
    assert stub.gauge.peak_inflight == 2


def test_query_overrides_delay_and_status() -> None:
    stub = StubUpstream(Behaviour(delay_ms=10_000))

    async def scenario() -> int:
        async with await _client(stub) as client:
            return (await client.get("/x?delay_ms=0&status=503")).status_code

    assert run(scenario()) == 503
    assert stub.gauge.errors == 1


def test_config_and_reset() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0))

    async def scenario() -> tuple[int, dict, dict]:
        async with await _client(stub) as client:
            await client.get("/x")
            bad = await client.post("/__upstream__/config", json={"error_rate": 3})
            good = await client.post("/__upstream__/config", json={"jitter_ms": 5})
            reset = await client.post("/__upstream__/reset")
            return bad.status_code, good.json(), reset.json()

    bad, config, stats = run(scenario())
    assert bad == 422
    assert config["jitter_ms"] == 5.0 and config["error_rate"] == 0.0
    assert stats["requests"] == 0


def test_error_rate_one_fails_every_call() -> None:
    stub = StubUpstream(Behaviour(delay_ms=0, error_rate=1, error_status=503))

    async def scenario() -> set[int]:
        async with await _client(stub) as client:
            return {(await client.get(f"/i/{i}")).status_code for i in range(5)}

    assert run(scenario()) == {503}


@pytest.mark.parametrize(
    "changes",
    [{"delay_ms": -1}, {"error_rate": 1.5}, {"error_status": 99}, {"colour": "red"},
     {"max_inflight": "many"}],
)
def test_bad_behaviour_is_refused_whole(changes: dict) -> None:
    behaviour = Behaviour(delay_ms=7)
    with pytest.raises(ConfigError):
        behaviour.update({"jitter_ms": 3, **changes})
    assert behaviour.jitter_ms == 0 and behaviour.delay_ms == 7


def test_env_round_trip() -> None:
    behaviour = Behaviour(delay_ms=12, max_inflight=4)
    assert Behaviour.from_env(behaviour.to_env()) == behaviour
