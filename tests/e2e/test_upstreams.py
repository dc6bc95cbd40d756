"""Named upstreams end to end: real stub processes, the reference app and small services.

Each stub is its own process with its own gauge, routes, recording and
connection count; handlers run in the stub's process; a reset while calls
are in flight leaves the next measurement exact.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout import FanoutWarning, RouteError
from pytest_fanout.limits import Behaviour, expand_placeholders
from pytest_fanout.measure import measure
from pytest_fanout.measurement import Request
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import Stack
from tests.helpers import wait_until

THREE = {"inventory": "INVENTORY_URL", "pricing": "PRICING_URL", "reviews": "REVIEWS_URL"}

ECHO_APP = """
import os
from fastapi import FastAPI

app = FastAPI()


@app.get("/env/{name}")
def env(name: str) -> dict:
    return {"value": os.environ.get(name)}
"""

HANDLERS = """
from pytest_fanout import StubResponse

def quote(request):
    body = request.json()
    return {"sku": request.path_params["sku"], "qty": body["qty"], "total": 3 * body["qty"],
            "agent": request.headers.get("user-agent", "")[:5], "q": request.query}

def teapot(request):
    return StubResponse(status=418, body="short and stout", headers={"x-kind": "teapot"})

async def later(request):
    return [1, 2, 3]

def broken(request):
    raise KeyError("price list")

def not_json(request):
    return {1, 2}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "echo_app.py").write_text(ECHO_APP)
    (root / "shop_handlers.py").write_text(HANDLERS)
    return root


@pytest.fixture(scope="module")
def three(project: Path) -> Iterator[Stack]:
    env = {"EXTRA": "{upstream_url:reviews}/v2", "FIRST": "{upstream_url}"}
    with Stack(
        "echo_app:app",
        upstreams=THREE,
        app_env=env,
        app_dir=project,
        behaviour=Behaviour(delay_ms=0),
    ) as stack:
        yield stack


@pytest.fixture
def stack3(three: Stack) -> Stack:
    for upstream in three.upstreams.values():
        upstream.restore()
        upstream.reset()
    return three


def test_each_upstream_is_its_own_process_in_its_own_variable(stack3: Stack) -> None:
    assert list(stack3.upstreams) == list(THREE)
    assert stack3.upstream is stack3.upstreams["inventory"]
    assert len({u.pid for u in stack3.upstreams.values()}) == 3
    assert stack3.app is not None
    with httpx2.Client(base_url=stack3.app.url, timeout=10, verify=tls_context()) as client:
        for name, variable in THREE.items():
            assert client.get(f"/env/{variable}").json()["value"] == stack3.upstreams[name].url
        assert client.get("/env/FANOUT_UPSTREAM_URL").json()["value"] is None
        assert client.get("/env/EXTRA").json()["value"] == stack3.upstreams["reviews"].url + "/v2"
        assert client.get("/env/FIRST").json()["value"] == stack3.upstream.url


def test_handlers_run_in_the_stub_and_get_the_request(stack3: Stack) -> None:
    pricing = stack3.upstreams["pricing"]
    pricing.route("POST", "/quote/{sku}", handler="shop_handlers:quote")
    pricing.route("GET", "/teapot", handler="shop_handlers:teapot")
    pricing.route("GET", "/later", handler="shop_handlers:later")
    with httpx2.Client(base_url=pricing.url, timeout=10, verify=tls_context()) as client:
        quote = client.post("/quote/ab-1?rush=1", json={"qty": 4})
        teapot = client.get("/teapot")
        later = client.get("/later")
    assert quote.json() == {
        "sku": "ab-1",
        "qty": 4,
        "total": 12,
        "agent": "pytho",
        "q": {"rush": "1"},
    }
    assert (teapot.status_code, teapot.text, teapot.headers["x-kind"]) == (
        418,
        "short and stout",
        "teapot",
    )
    assert later.json() == [1, 2, 3]
    [recorded] = pricing.assert_called("POST", "/quote/{sku}", times=1)
    assert recorded.json() == {"qty": 4} and recorded.query == "rush=1"
    assert stack3.upstreams["inventory"].requests() == []  # each stub records its own


def test_a_handler_that_raises_answers_500_and_logs_why(stack3: Stack) -> None:
    pricing = stack3.upstreams["pricing"]
    pricing.route("GET", "/broken", handler="shop_handlers:broken")
    pricing.route("GET", "/not-json", handler="shop_handlers:not_json")
    answer = httpx2.get(pricing.url + "/broken", timeout=10, verify=tls_context())
    assert answer.status_code == 500
    assert "handler shop_handlers:broken raised KeyError" in answer.json()["detail"]
    assert (
        httpx2.get(pricing.url + "/not-json", timeout=10, verify=tls_context()).status_code == 500
    )
    wait_until(lambda: "KeyError: 'price list'" in pricing.log_tail(), 5, "the traceback logged")
    assert "stub upstream: handler shop_handlers:broken raised on GET /broken" in (
        pricing.log_tail()
    )
    assert pricing.stats()["errors"] == 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(method="GET", path="/a/{"), "has an unmatched brace"),
        (dict(method="BREW", path="/a"), "method 'BREW' is not one of"),
        (dict(method="GET", path="/a", status=700), "status 700 is not an HTTP status"),
        (dict(method="GET", path="/a", handler="nowhere:quote"), "does not import"),
        (dict(method="GET", path="/a", json={"when": object()}), "json not JSON-able"),
        (dict(method="GET", path="/a", json={"x": float("nan")}), "json not JSON-able"),
    ],
    ids=["template", "method", "status", "handler", "not-json-able", "nan"],
)
def test_bad_routes_are_one_line_at_the_call(stack3: Stack, kwargs: dict, words: str) -> None:
    with pytest.raises(RouteError) as refused:
        stack3.upstreams["pricing"].route(**kwargs)
    message = str(refused.value)
    assert words in message and "\n" not in message
    assert message.startswith("upstream 'pricing'")


def test_handler_raising_on_import_is_one_line(stack3: Stack, project: Path) -> None:
    (project / "bad_handlers.py").write_text("raise RuntimeError('no config file')\n")
    with pytest.raises(RouteError, match="raised on import: RuntimeError: no config file"):
        stack3.upstreams["reviews"].route("GET", "/r", handler="bad_handlers:f")


def test_configure_slows_a_routed_path_whose_delay_is_left_none(stack3: Stack) -> None:
    reviews = stack3.upstreams["reviews"]
    reviews.route("GET", "/r/{id}", json={"id": "{id}"})
    reviews.configure(delay_ms=120)
    assert httpx2.get(reviews.url + "/r/7", timeout=10, verify=tls_context()).json() == {"id": "7"}
    [seen] = reviews.requests()
    assert seen.delay_ms == 120


def test_restore_clears_routes_and_recordings(stack3: Stack) -> None:
    reviews = stack3.upstreams["reviews"]
    reviews.route("GET", "/r", json={"r": 1})
    httpx2.get(reviews.url + "/r", timeout=10, verify=tls_context())
    reviews.restore()
    assert reviews.requests() == []
    assert httpx2.get(reviews.url + "/r", timeout=10, verify=tls_context()).json() == {"ok": True}


def test_assert_called_says_what_came(stack3: Stack) -> None:
    inventory = stack3.upstreams["inventory"]
    for sku in ("a", "b"):
        httpx2.get(f"{inventory.url}/stock/{sku}", timeout=10, verify=tls_context())
    with pytest.raises(AssertionError) as failed:
        inventory.assert_called("POST", "/stock/{sku}", times=2)
    assert str(failed.value) == (
        "expected POST /stock/{sku} 2 time(s) at upstream 'inventory', it came 0 time(s); "
        "the upstream saw: GET /stock/a x1, GET /stock/b x1"
    )


@pytest.mark.parametrize(
    "value", ["$FANOUT_UPSTREAM_URL", "${HOME}/x", "{upstream}", "{upstream_url:nope}", "{host}"]
)
def test_bad_placeholders_are_refused(value: str) -> None:
    with pytest.raises(ValueError) as refused:
        expand_placeholders(value, {"inventory": "http://127.0.0.1:1"})
    assert "\n" not in str(refused.value)


# ---- the reference app: gauge across resets, connections -------------------------------


@pytest.fixture(scope="module")
def reference() -> Iterator[Stack]:
    with Stack(behaviour=Behaviour(delay_ms=100)) as stack:
        yield stack


def test_reset_with_calls_in_flight_then_an_exact_peak(reference: Stack) -> None:
    """Five slow calls of an 'earlier test' are in flight at the reset; the measurement
    waits for them, says so in one warning, and its peak is exactly its own 10."""
    upstream = reference.upstream
    assert reference.app is not None
    upstream.restore()
    threads = [
        threading.Thread(
            target=httpx2.get, args=(upstream.url + "/x?delay_ms=1500",), kwargs={"timeout": 10}
        )
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: upstream.stats()["inflight_now"] == 5, 10, "5 calls in flight")
    upstream.reset()  # a reset with calls in flight (the old gauge bug)
    with (
        httpx2.Client(timeout=30, verify=tls_context()) as client,
        pytest.warns(FanoutWarning) as warned,
    ):
        m = measure(
            client,
            reference.app.url,
            Request("/async/10"),
            upstreams=reference.upstreams,
            app=reference.app,
            repeat=2,
            warmup=0,
            n=10,
        )
    for thread in threads:
        thread.join(timeout=10)
    assert m.structure == {"default": [10]}
    assert m.upstream_requests_per_sample == [10, 10]
    # The old calls count in no gauge: the timed peak is this request's alone.
    assert max(m.upstream_peak_per_sample) <= 10
    assert len(warned) == 1
    assert str(warned[0].message) == (
        "5 call(s) of an earlier test were still in flight at upstream 'default': "
        "waited for them before measuring GET /async/10"
    )
    stats = upstream.stats()
    assert stats["inflight"] == 0 and stats["inflight_now"] == 0


def test_shared_pool_opens_no_connection_after_warm_up(reference: Stack) -> None:
    assert reference.app is not None
    reference.upstream.restore()
    with httpx2.Client(timeout=30, verify=tls_context()) as client:
        m = measure(
            client,
            reference.app.url,
            Request("/async/10"),
            upstreams=reference.upstreams,
            app=reference.app,
            repeat=3,
            warmup=1,
            n=10,
        )
    assert m.upstream().connections_per_sample == [0, 0, 0]
    assert m.connections_opened == 0


def test_a_dropped_connection_is_a_counted_line_not_a_traceback(stack3: Stack) -> None:
    reviews = stack3.upstreams["reviews"]
    reviews.configure(drop_rate=1)
    for i in range(20):
        with pytest.raises(httpx2.TransportError):
            httpx2.get(f"{reviews.url}/r/{i}", timeout=10, verify=tls_context())
    assert reviews.stats()["dropped"] == 20
    wait_until(
        lambda: reviews.log_tail().count("without completing response") == 20,
        5,
        "one line per drop",
    )
    assert "Traceback" not in reviews.log_tail()


def test_a_stack_whose_app_cannot_start_leaves_no_stub(project: Path) -> None:
    stack = Stack("no_such_module:app", upstreams=THREE, app_dir=project)
    with pytest.raises(Exception, match="cannot import app 'no_such_module:app'"):
        stack.start()
    assert not any(u.running() for u in stack.upstreams.values())
    assert all(u.proc is not None for u in stack.upstreams.values())  # they had started
