"""Measurement's per-upstream gauges and the assertions on them: pure logic, no process."""

from __future__ import annotations

import json

import pytest

from pytest_fanout import FanoutAssertionError, Measurement, Request
from pytest_fanout.assertions import assert_concurrency, assert_connection_reuse


def measurement(**gauges: dict[str, list[int]]) -> Measurement:
    first = next(iter(gauges.values()))
    return Measurement(
        path="/basket",
        method="POST",
        samples=[0.1, 0.12],
        upstream_requests_per_sample=first["requests"],
        upstream_peak_per_sample=first["peak_inflight"],
        upstream_gauges=gauges,
        ideal_given_s=0.1,
    )


def g(
    requests, peak, connections, rejected=(0, 0), errors=(0, 0), closed=None
) -> dict[str, list[int]]:
    gauges = {
        "requests": list(requests),
        "peak_inflight": list(peak),
        "connections": list(connections),
        "rejected": list(rejected),
        "errors": list(errors),
    }
    if closed is not None:  # connection lifetimes: how many of the new closed with the request
        gauges["connections_closed"] = list(closed)
    return gauges


def test_per_upstream_gauges_and_connections_summed() -> None:
    m = measurement(
        inventory=g([10, 10], [10, 9], [0, 2], rejected=[1, 2]),
        pricing=g([1, 1], [1, 1], [1, 0], errors=[0, 1]),
    )
    assert m.upstream_names == ["inventory", "pricing"]
    assert m.upstream().name == "inventory"
    inventory = m.upstream("inventory")
    assert (inventory.requests, inventory.peak_inflight, inventory.connections_opened) == (
        10,
        10,
        2,
    )
    assert inventory.rejected == 3 and m.upstream("pricing").errors == 1
    assert m.connections_per_sample == [1, 2]
    assert m.connections_opened == 2
    assert m.ideal_s == 0.1 and m.efficiency == pytest.approx(0.1 / 0.11)
    with pytest.raises(KeyError, match="no upstream named 'nope'"):
        m.upstream("nope")


def test_to_dict_round_trips_through_json() -> None:
    m = measurement(inventory=g([3, 3], [3, 3], [0, 0]), pricing=g([1, 1], [1, 1], [0, 0]))
    data = json.loads(json.dumps(m.to_dict()))
    again = Measurement.from_dict(data)
    assert again == m
    assert data["connections_opened"] == 0 and data["method"] == "POST"
    assert again.upstream("pricing").requests_per_sample == [1, 1]


def test_assert_concurrency_on_a_named_upstream() -> None:
    m = measurement(inventory=g([10, 10], [10, 10], [0, 0]), pricing=g([1, 1], [2, 1], [0, 0]))
    assert_concurrency(m, peak=10, requests=10)  # the first upstream
    assert_concurrency(m, at_most=2, upstream="pricing")
    with pytest.raises(FanoutAssertionError) as failed:
        assert_concurrency(m, peak=1, upstream="pricing")
    assert str(failed.value) == (
        "expected 1 requests in flight at upstream 'pricing' during POST /basket, saw 2 "
        "(per sample: [2, 1]) (timed): more calls overlapped than expected: the bound is not "
        "enforced"
    )


def test_assert_concurrency_checks_the_held_waves_not_the_timed_peaks() -> None:
    # A gather of 10 on a slow client: the timed samples overlapped only 6 and 4 calls.
    m = measurement(inventory=g([10, 10], [6, 4], [0, 0]), pricing=g([1, 1], [1, 1], [0, 0]))
    m.structure = {"inventory": [10], "pricing": [1]}
    m.upstream_delay_s = 0.1
    assert_concurrency(m, peak=10, requests=10, waves=[10])
    assert_concurrency(m, peak=1, requests=1, upstream="pricing")
    with pytest.raises(FanoutAssertionError) as failed:
        assert_concurrency(m, peak=20)
    assert str(failed.value).startswith(
        "expected 20 calls in flight at once at upstream 'inventory' during POST /basket, the "
        "held probe saw at most 10 (waves [10]); the timed samples at the 100 ms delay reached "
        "6: a limit of 10 caps them (httpx.Limits("
    )
    with pytest.raises(FanoutAssertionError, match=r"expected waves \[5, 5\] .* saw \[10\]"):
        assert_concurrency(m, waves=[5, 5])
    with pytest.raises(FanoutAssertionError, match="saw 10 .the held probe's waves"):
        assert_concurrency(m, at_most=8)


def test_a_sequential_structure_reads_as_one_at_a_time() -> None:
    m = measurement(inventory=g([3, 3], [1, 1], [0, 0]))
    m.structure = {"inventory": [1, 1, 1]}
    with pytest.raises(FanoutAssertionError, match="one at a time: each was awaited"):
        assert_concurrency(m, peak=3)


def test_the_structure_round_trips_and_old_data_has_none() -> None:
    m = measurement(inventory=g([3, 3], [3, 3], [0, 0]))
    m.structure = {"inventory": [3]}
    data = json.loads(json.dumps(m.to_dict()))
    assert data["structure"] == {"inventory": [3]}
    assert Measurement.from_dict(data).structure == {"inventory": [3]}
    del data["structure"]
    assert Measurement.from_dict(data).structure == {}
    data["structure"] = None
    old = Measurement.from_dict(data)
    assert old.structure == {} and old.waves() is None and old.upstream().waves is None
    with pytest.raises(FanoutAssertionError, match="no held probe"):
        assert_concurrency(old, waves=[3])


def test_connection_reuse_tells_a_client_per_request_from_a_small_pool() -> None:
    per_request = measurement(inventory=g([20, 20], [20, 20], [20, 20]))
    with pytest.raises(FanoutAssertionError) as failed:
        assert_connection_reuse(per_request)
    assert (
        "every one of the 20 calls arrived on a new connection: no connection was reused "
        "(a client built per request?)"
    ) in str(failed.value)
    small_pool = measurement(inventory=g([50, 50], [50, 50], [30, 30], closed=[0, 0]))
    with pytest.raises(FanoutAssertionError) as failed:
        assert_connection_reuse(small_pool)
    assert (
        "30 new connections for 50 calls, outliving the request: the client keeps fewer idle "
        "connections than the fan-out needs (httpx keeps 20 by default)"
    ) in str(failed.value)
    batched = measurement(inventory=g([20, 20], [5, 5], [5, 5], closed=[5, 5]))
    with pytest.raises(FanoutAssertionError) as failed:
        assert_connection_reuse(batched)
    assert (
        "5 new connections for 20 calls, every one closed by the end of the request: reused "
        "only within the request (a client built per request?)"
    ) in str(failed.value)
    assert "fewer idle" not in str(failed.value)
    unknown = measurement(inventory=g([50, 50], [50, 50], [30, 30]))
    with pytest.raises(FanoutAssertionError, match="no connection lifetimes to tell them apart"):
        assert_connection_reuse(unknown)
    assert_connection_reuse(small_pool, at_most=30)
    two = measurement(inventory=g([5, 5], [5, 5], [0, 0]), pricing=g([1, 1], [1, 1], [1, 1]))
    assert_connection_reuse(two, upstream="inventory")
    with pytest.raises(FanoutAssertionError, match="the one call at upstream 'pricing'"):
        assert_connection_reuse(two, upstream="pricing")
    # Summed over both, each upstream is told apart: only pricing opened connections.
    with pytest.raises(FanoutAssertionError) as failed:
        assert_connection_reuse(two)
    assert "at upstream 'inventory'" not in str(failed.value)
    # A client per request for one upstream beside a shared one: no "pool" for the sum.
    one_fresh = measurement(
        inventory=g([6, 6], [6, 6], [6, 6], closed=[6, 6]), pricing=g([1, 1], [1, 1], [0, 0])
    )
    with pytest.raises(FanoutAssertionError) as failed:
        assert_connection_reuse(one_fresh)
    message = str(failed.value)
    assert (
        "every one of the 6 calls at upstream 'inventory' arrived on a new connection: no "
        "connection was reused"
    ) in message
    assert "fewer idle" not in message
    assert "pricing" not in message.split(": no connection reuse")[0]


def test_an_unexpected_status_names_where_a_redirect_pointed() -> None:
    import httpx2

    from pytest_fanout.measure import unexpected_status

    moved = httpx2.Response(301, headers={"location": "/api/price/"})
    assert unexpected_status(Request("/api/price", "POST"), moved) == (
        "POST /api/price answered 301 (a redirect to /api/price/; the harness does not follow "
        "it), expected 200: "
    )
    created = httpx2.Response(201, json={"id": 1})
    assert unexpected_status(Request("/orders", "post"), created, " (the held probe)") == (
        "POST /orders answered 201 (if 201 is this route's success, say expect_status=201), "
        'expected 200 (the held probe): {"id":1}'
    )


# ---- the one request value --------------------------------------------------------------


def test_a_request_is_normalised_once_and_gives_httpx2_its_keywords() -> None:
    plain = Request("/x")
    assert (plain.method, plain.label, plain.expect_status) == ("GET", "GET /x", 200)
    assert plain.kwargs() == {}
    headers = {"authorization": "Bearer t"}
    posted = Request("/orders", "post", json={"id": 1}, headers=headers, expect_status=201)
    assert posted.method == "POST"
    assert posted.label == "POST /orders"
    assert posted.kwargs() == {"json": {"id": 1}, "headers": {"authorization": "Bearer t"}}
    headers["authorization"] = "changed"  # the request keeps its own copy
    assert posted.headers == {"authorization": "Bearer t"}
    raw = Request("/upload", "PUT", content=b"\x00\xff")
    assert raw.kwargs() == {"content": b"\x00\xff"}
    with pytest.raises(AttributeError):
        posted.method = "GET"  # type: ignore[misc]  # frozen: one value, passed on


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "orders"}, "the path 'orders' must start with /"),
        ({"path": "/x", "expect_status": 99}, "expect_status must be an HTTP status (100-599)"),
        ({"path": "/x", "expect_status": 600}, "expect_status must be an HTTP status (100-599)"),
        ({"path": "/x", "expect_status": True}, "expect_status must be an HTTP status"),
        ({"path": "/x", "json": {}, "content": "a"}, "POST /x: give json= or content=, not both"),
        ({"path": "/x", "method": "GET /y"}, "is not an HTTP method"),
        ({"path": "/x", "method": ""}, "is not an HTTP method"),
    ],
)
def test_a_bad_request_is_one_line(kwargs: dict, message: str) -> None:
    if "json" in kwargs:
        kwargs["method"] = "post"
    with pytest.raises(ValueError) as refused:
        Request(**kwargs)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_request_round_trips_through_json() -> None:
    for request in (
        Request("/x"),
        Request("/orders", "POST", json={"items": [1, 2]}, headers={"x-k": "v"}),
        Request("/upload", "PUT", content=b"\x00\xff", expect_status=204),
        Request("/text", "POST", content="plain"),
    ):
        data = json.loads(json.dumps(request.to_dict()))
        assert Request.from_dict(data) == request
    assert Request("/x").to_dict() == {"method": "GET", "path": "/x", "expect_status": 200}


def test_a_measurement_carries_its_request_and_saves_no_body() -> None:
    request = Request("/orders", "post", json={"card": "4111"}, expect_status=201)
    m = Measurement(path="/orders", samples=[0.1], request=request)
    assert m.request is request
    assert (m.method, m.path, m.status_code) == ("POST", "/orders", 201)
    saved = m.to_dict()
    assert "request" not in saved and "4111" not in json.dumps(saved)
    loaded = Measurement.from_dict(json.loads(json.dumps(saved)))
    assert loaded.request == Request("/orders", "POST", expect_status=201)
    # Built the old way, a Measurement still has its request (without a body).
    old = Measurement(path="/basket", method="put", samples=[0.1])
    assert old.request == Request("/basket", "PUT")
    # A hand-made record whose path is not a request's still loads: its numbers are good.
    odd = Measurement.from_dict({"path": "custom", "samples": [0.1]})
    assert odd.request is None and odd.median_s == 0.1


def test_a_measurement_keeps_only_the_longest_stalls() -> None:
    from pytest_fanout.measurement import MAX_STALLS

    m = Measurement(path="/x", samples=[0.1])
    m.keep_stalls([{"duration_s": i / 100} for i in range(MAX_STALLS)])
    m.keep_stalls([{"duration_s": 1.0}, {"duration_s": 0.0}])
    assert len(m.stalls) == MAX_STALLS
    assert m.stalls[0] == {"duration_s": 1.0}
    assert {"duration_s": 0.0} not in m.stalls


def test_the_fixture_builds_one_request_from_a_tests_keywords_or_takes_one() -> None:
    from pytest_fanout.fixture import _one_request

    built = _one_request("/orders", None, "post", {"id": 1}, None, {"x-k": "v"}, 201)
    assert built == Request(
        "/orders", "POST", json={"id": 1}, headers={"x-k": "v"}, expect_status=201
    )
    given = Request("/x", "PUT", content=b"1")
    assert _one_request(None, given, "GET", None, None, None, 200) is given
    with pytest.raises(TypeError, match="not both"):
        _one_request("/x", given, "GET", None, None, None, 200)
    with pytest.raises(TypeError, match="not both"):
        _one_request(None, given, "POST", None, None, None, 200)
    with pytest.raises(TypeError, match="give the path"):
        _one_request(None, None, "GET", None, None, None, 200)
