"""The delivery service's tests as its user writes them: no ini, no option.

(Copied as test_delivery.py by tests/e2e/test_spec_stack.py.)
"""


def test_the_declared_routes_answer(fanout):
    assert fanout.get("/deliver/4").json() == {"available": 8, "zone": "Z4"}


def test_each_upstream_is_exact(fanout):
    m = fanout.measure("/deliver/5", repeat=2, ideal_s=0.040 + 0.010)
    fanout.assert_concurrency(m, peak=5, requests=5, upstream="stock")
    fanout.assert_concurrency(m, peak=1, requests=1, upstream="geo-api")


def test_a_test_may_replace_a_route(fanout, fanout_upstreams):
    fanout_upstreams["geo-api"].route("POST", "/zone", json={"zone": "mine"})
    assert fanout.get("/deliver/1").json()["zone"] == "mine"


def test_the_declared_route_is_back_after_that_test(fanout):
    assert fanout.get("/deliver/1").json() == {"available": 2, "zone": "Z1"}
