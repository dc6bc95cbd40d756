"""Calls one at a time are not all a loop to gather (found running the wheel on a public
weather aggregator, docs/field.md): calls gathered behind a rate limiter go one at a time
by design, and a blocking client in `async def` overlaps nothing when gathered; and a gather
the default pool of 100 capped was no finding at all without `n` (a public GitHub users
service of 60 users: held waves [100, 20], "nothing wrong found"). Each route of
`paced_app` does the thing or its fix, against a real stub; the test asserts the words for
one and their absence for the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.assertions import assert_within_limits
from pytest_fanout.diagnosis import diagnose
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import Measurement
from pytest_fanout.servers import Stack
from pytest_fanout.servers.process import tls_context
from tests.helpers import measure_stack

APP_DIR = Path(__file__).parent / "paced_app"
GATHER = "gather them"


@pytest.fixture(scope="module")
def service() -> Iterator[Stack]:
    with Stack("main:app", app_dir=APP_DIR, behaviour=Behaviour(delay_ms=20)) as stack:
        stack.upstream.route("GET", "/item/{i}", json={"item": "{i}"})
        yield stack


@pytest.fixture
def stack(service: Stack) -> Stack:
    service.upstream.restore()
    service.upstream.reset()
    return service


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30, verify=tls_context()) as client:
        yield client


def sequential(m: Measurement) -> list[str]:
    return [f.message for f in diagnose(m) if f.kind == "sequential"]


def test_an_awaited_loop_is_told_to_gather_and_its_gather_is_clean(
    stack: Stack, client: httpx2.Client
) -> None:
    loop = measure_stack(stack, client, "/loop", repeat=3)
    assert loop.structure["default"] == [1, 1, 1, 1]
    (words,) = sequential(loop)
    assert "each awaited before the next" in words and GATHER in words
    assert "spaced out" not in words
    assert sequential(measure_stack(stack, client, "/gathered", repeat=3)) == []


def test_calls_paced_by_a_rate_limiter_are_not_told_to_gather(
    stack: Stack, client: httpx2.Client
) -> None:
    m = measure_stack(stack, client, "/paced", repeat=3)
    assert m.structure["default"] == [1, 1, 1, 1]  # gathered, one at a time by the limiter
    (words,) = sequential(m)  # no limit declared: the harness cannot tell it is right
    assert "spaced out" in words and "a rate limiter" in words
    assert GATHER not in words


def test_calls_paced_within_the_upstreams_declared_limit_are_no_finding(
    stack: Stack, client: httpx2.Client
) -> None:
    stack.upstream.configure(rate_limit="6/s", burst=2)  # the limiter sends 5/s
    m = measure_stack(stack, client, "/paced", repeat=3)
    assert m.upstream("default").rejected == 0
    assert_within_limits(m)
    assert [f.kind for f in diagnose(m)] == []
    # The same limit on the awaited loop: still the loop's words (its calls are not spaced).
    stack.upstream.configure(rate_limit="6/s", burst=20)
    (words,) = sequential(measure_stack(stack, client, "/loop", repeat=3))
    assert GATHER in words


def test_a_blocking_client_is_not_told_to_gather(stack: Stack, client: httpx2.Client) -> None:
    m = measure_stack(stack, client, "/blocking", repeat=3)
    (words,) = sequential(m)
    assert "held the event loop" in words and "use an async client" in words
    assert "gathering its calls overlaps nothing" in words
    assert "if the calls do not need each other's answers" not in words
    assert "blocks-loop" in [f.kind for f in diagnose(m)]


def test_a_gather_capped_by_the_default_pool_is_named_without_n(
    stack: Stack, client: httpx2.Client
) -> None:
    m = measure_stack(stack, client, "/default-pool", repeat=2)  # no n
    assert m.structure["default"] == [100, 20]
    (cap,) = [f.message for f in diagnose(m) if f.kind == "pool-cap"]
    assert "at most 100 calls in flight at once" in cap
    assert "120 calls of GET /item/{id} in 2 rounds" in cap  # restore() took the route off
    assert "the default pool of httpx" in cap
    fixed = measure_stack(stack, client, "/no-pool-cap", repeat=2)
    assert fixed.structure["default"] == [120]
    assert "pool-cap" not in [f.kind for f in diagnose(fixed)]
