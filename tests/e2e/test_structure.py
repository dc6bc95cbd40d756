"""The held probe on clients this project did not write: the structure is what the code
allows, exact on any machine, and the diagnosis reads it with the timed peak beside it.

One service (`structure_app/catalog.py`), not shaped like app/: two upstreams, POST
bodies, JSON answers, a route per client. The waves below come from the code alone:
a gather of n on a client without a limit is [n]; httpx's and httpx2's stock pools
(100 connections) and aiohttp's default connector (limit 100) cut 200 calls into
[100, 100]; a thread pool of 8 cuts 20 `requests` calls into [8, 8, 4]. No assertion
here reads a timed peak: `make test-loaded` runs this file beside two CPU-bound
processes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from pytest_fanout.assertions import assert_concurrency
from pytest_fanout.diagnosis import diagnose
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import Measurement, Request
from pytest_fanout.servers import Stack
from pytest_fanout.servers.held import HoldBoundError
from pytest_fanout.servers.process import tls_context
from tests.helpers import measure_stack

APP_DIR = Path(__file__).parent / "structure_app"
DELAY_MS = 100
UPSTREAMS = {"catalog": "FANOUT_UPSTREAM_URL", "reviews": "REVIEWS_URL"}
MODEL = {"id": "{model}", "object": "model", "created": 0, "owned_by": "stub"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(
        "catalog:app", app_dir=APP_DIR, behaviour=Behaviour(delay_ms=DELAY_MS), upstreams=UPSTREAMS
    ) as stack:
        catalog, reviews = stack.upstreams["catalog"], stack.upstreams["reviews"]
        catalog.route("GET", "/item/{sku}", json={"sku": "{sku}", "price": 3})
        catalog.route("GET", "/v1/models/{model}", json=MODEL)
        reviews.route("GET", "/reviews/{sku}", json={"sku": "{sku}", "stars": 4})
        yield stack


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        yield client


def take(stack: Stack, client: httpx2.Client, path: str, n: int, **body: Any) -> Measurement:
    return measure_stack(stack, client, Request(path, **body), n=n, concurrency=n)


@pytest.mark.parametrize(
    ("path", "n", "waves"),
    [
        ("/httpx/unbounded/100", 100, [100]),
        ("/httpx/stock/200", 200, [100, 100]),
        ("/httpx2/150", 150, [100, 50]),
        ("/aiohttp/100/200", 200, [100, 100]),
        ("/aiohttp/0/200", 200, [200]),
        ("/threads/8/20", 20, [8, 8, 4]),
        ("/threads/20/20", 20, [20]),
    ],
)
def test_the_structure_is_what_the_client_allows(
    stack: Stack, client: httpx2.Client, path: str, n: int, waves: list[int]
) -> None:
    m = take(stack, client, path, n)
    assert m.structure == {"catalog": waves, "reviews": []}
    assert_concurrency(m, peak=max(waves), requests=n, waves=waves, upstream="catalog")
    findings = {f.kind: f for f in diagnose(m)}
    if max(waves) < n:
        cap = findings["pool-cap"]
        assert f"at most {max(waves)} calls in flight at once" in cap.message
        assert f"though {path} asks for {n}" in cap.message
    else:
        # Whatever the timed peak reached on this machine: never a limit that is not there.
        assert "pool-cap" not in findings and "sequential" not in findings
        slow = findings.get("slow-client")
        if slow is not None:  # the timed samples fell short: the message says why
            assert f"the code puts {n} calls in flight at once" in slow.message
            assert "a limit of" not in slow.message and "Semaphore" not in slow.message


@pytest.mark.skipif(importlib.util.find_spec("openai") is None, reason="openai not installed")
def test_openais_async_client_is_one_wave(stack: Stack, client: httpx2.Client) -> None:
    m = take(stack, client, "/openai/30", 30)
    assert m.structure["catalog"] == [30]
    assert "pool-cap" not in {f.kind for f in diagnose(m)}


def test_two_upstreams_called_together_each_get_their_wave(
    stack: Stack, client: httpx2.Client
) -> None:
    basket = {"skus": [f"s{i}" for i in range(12)]}
    m = take(stack, client, "/basket/together", 12, method="POST", json=basket)
    assert m.structure == {"catalog": [12], "reviews": [12]}


def test_a_chain_across_upstreams_does_not_deadlock_and_each_is_one_wave(
    stack: Stack, client: httpx2.Client
) -> None:
    basket = {"skus": [f"s{i}" for i in range(9)]}
    m = take(stack, client, "/basket/chain", 9, method="POST", json=basket)
    # The reviews' hold begins only when the catalogue's answers let the app call it.
    assert m.structure == {"catalog": [9], "reviews": [9]}
    assert m.upstream("reviews").requests_per_sample == [9, 9]


def test_a_user_holds_one_upstream_and_reads_its_waves(stack: Stack, client: httpx2.Client) -> None:
    assert stack.app is not None
    catalog = stack.upstreams["catalog"]
    with catalog.hold(app_pid=stack.app.pid) as held:
        answer = client.get(f"{stack.app.url}/aiohttp/100/130")
    assert answer.status_code == 200 and len(answer.json()["items"]) == 130
    assert (held.waves, held.peak, held.calls, held.rounds) == ([100, 30], 100, 130, 2)
    with catalog.hold(count=40, app_pid=stack.app.pid) as counted:
        client.get(f"{stack.app.url}/aiohttp/0/100")
    assert counted.waves == [40, 40, 20]


def test_past_its_bound_a_hold_fails_in_one_line_and_nothing_hangs(
    stack: Stack, client: httpx2.Client
) -> None:
    assert stack.app is not None
    catalog = stack.upstreams["catalog"]
    with pytest.raises(HoldBoundError) as failed, catalog.hold(max_calls=50):
        answer = client.get(f"{stack.app.url}/aiohttp/0/120")
        assert answer.status_code == 200  # the held calls were answered, then the rest
    assert str(failed.value) == (
        "upstream 'catalog' ended its hold: held 50 calls in all (max_calls=50): the client "
        "kept sending"
    )
    with catalog.hold() as again:  # the stub holds again afterwards
        client.get(f"{stack.app.url}/aiohttp/0/5")
    assert again.waves == [5]
