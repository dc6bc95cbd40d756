"""Causes read off the structure without `n` (issue 31 item 2, and item 3's connection
leak), end to end: each route of `causes_app` does the thing or its fix, against a real stub;
the test asserts the words for one and their absence for the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.assertions import FanoutAssertionError, assert_connection_reuse
from pytest_fanout.diagnosis import diagnose
from pytest_fanout.limits import Behaviour
from pytest_fanout.measurement import Measurement, Request
from pytest_fanout.servers import Stack
from pytest_fanout.servers.process import tls_context
from pytest_fanout.timeline.session import run_findings
from tests.helpers import measure_stack

APP_DIR = Path(__file__).parent / "causes_app"
#: The three model calls of the streamed routes, each its own delay: they end apart.
MODEL_MS = {"a": 50, "b": 150, "c": 250}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack("main:app", app_dir=APP_DIR, behaviour=Behaviour(delay_ms=20)) as stack:
        up = stack.upstream
        up.route("GET", "/item/{i}", json={"item": "{i}"})
        up.route("GET", "/user/{u}", json={"id": "{u}", "org": 7})
        up.route("GET", "/page/{cursor}", json={"next": "{cursor}1"})
        for name, delay in MODEL_MS.items():
            up.route("GET", f"/model/{name}", json={"model": name}, delay_ms=delay)
        yield stack


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30, verify=tls_context()) as client:
        yield client


def take(stack: Stack, client: httpx2.Client, path: str) -> Measurement:
    return measure_stack(stack, client, path, repeat=3)


def messages(m: Measurement, kind: str) -> list[str]:
    return [f.message for f in diagnose(m) if f.kind == kind]


def test_a_loop_of_one_route_is_sequential_and_its_gather_is_not(
    stack: Stack, client: httpx2.Client
) -> None:
    loop = take(stack, client, "/loop")  # no n: read off the structure alone
    assert loop.structure["default"] == [1] * 30
    (sequential,) = messages(loop, "sequential")
    assert "30 calls of GET /item/{i} made one at a time" in sequential
    assert "if the calls do not need each other's answers" in sequential
    gathered = take(stack, client, "/gathered")
    assert gathered.structure["default"] == [30]
    assert messages(gathered, "sequential") == []


def test_a_two_stage_endpoint_is_not_sequential(stack: Stack, client: httpx2.Client) -> None:
    m = take(stack, client, "/two-stage")
    assert m.structure["default"] == [1, 1]
    assert m.structure_routes["default"] == ["GET /user/{u}", "GET /orders/{id}"]
    assert messages(m, "sequential") == []


def test_a_stream_that_waits_for_every_call_is_buffered(
    stack: Stack, client: httpx2.Client
) -> None:
    m = take(stack, client, "/stream-buffered")
    assert m.streamed
    (buffered,) = messages(m, "buffered-stream")
    assert "after the upstreams' last byte at" in buffered
    assert "the answer waits for every call" in buffered
    # Order on one clock, in every sample: the first byte after the last model's answer.
    firsts, lasts = m.first_byte_per_sample, m.upstream_last_byte_per_sample
    assert all(f >= last for f, last in zip(firsts, lasts, strict=True))


def test_a_stream_that_sends_each_answer_as_it_comes_is_not_buffered(
    stack: Stack, client: httpx2.Client
) -> None:
    m = take(stack, client, "/stream-each")
    assert m.streamed and len(m.upstream_last_byte_per_sample) == len(m.samples)
    assert messages(m, "buffered-stream") == []
    # Its first byte came before the slowest model answered, in every sample.
    firsts, lasts = m.first_byte_per_sample, m.upstream_last_byte_per_sample
    assert all(f < last for f, last in zip(firsts, lasts, strict=True))


def test_a_client_built_per_call_and_never_closed_is_a_leak(
    stack: Stack, client: httpx2.Client
) -> None:
    m = take(stack, client, "/leak")
    g = m.upstream()
    assert g.connections_per_sample == [6, 6, 6] and g.closed_per_sample == [0, 0, 0]
    live = g.live_per_sample
    assert [live[i] - live[i - 1] for i in range(1, len(live))] == [6, 6]  # none ever closed
    (leak,) = messages(m, "connection-leak")
    assert "6 new connections to the upstream in every sample for 6 calls, all left open" in leak
    assert "a client built and not closed" in leak
    assert messages(m, "connection-churn") == []
    with pytest.raises(FanoutAssertionError) as caught:
        assert_connection_reuse(m)
    assert "a client built and not closed (a leak), not a small pool" in str(caught.value)
    assert "keep-alive pool smaller" not in str(caught.value)


def test_a_small_shared_pool_is_a_pool_not_a_leak(stack: Stack, client: httpx2.Client) -> None:
    m = take(stack, client, "/small-pool")
    (churn,) = messages(m, "connection-churn")
    assert "a keep-alive pool smaller than the fan-out?" in churn
    assert messages(m, "connection-leak") == []
    with pytest.raises(FanoutAssertionError) as caught:
        assert_connection_reuse(m)
    assert "leak" not in str(caught.value)


def test_a_shared_client_has_no_connection_finding(stack: Stack, client: httpx2.Client) -> None:
    m = take(stack, client, "/shared")
    kinds = {f.kind for f in diagnose(m)}
    assert not kinds & {"connection-leak", "connection-churn", "no-connection-reuse"}, kinds
    assert_connection_reuse(m)


def test_rounds_whose_calls_use_each_others_answers_have_no_saving(
    stack: Stack, client: httpx2.Client
) -> None:
    assert stack.app is not None
    found = run_findings(client, stack.app, stack.upstreams, Request("/pages"))
    assert [f for f in found if f.kind == "paid-repeatedly"] == []
    known = run_findings(client, stack.app, stack.upstreams, Request("/pages-known"))
    (paid,) = [f.message for f in known if f.kind == "paid-repeatedly"]
    assert paid.startswith("default: paid 3 times in turn")
    assert "its calls do not need each other's answers (they asked the same" in paid
