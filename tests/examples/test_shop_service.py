"""Testing the shop, a service with two upstreams, written as its own team would.

pytest-shop.ini names the app and its two upstreams; each upstream is a stub
in its own process whose URL lands in INVENTORY_URL or PRICING_URL. Routes
give the answers the shop reads; the counts, the peaks, the recorded
requests and the connections each stub accepted are exact.
"""

import pytest

from pytest_fanout import FanoutAssertionError

SKUS = [f"sku-{i}" for i in range(10)]
BASKET = {"skus": SKUS}


@pytest.fixture
def shop(fanout, fanout_upstreams):
    """The shop with its upstreams answering like the real ones (undone after each test)."""
    inventory, pricing = fanout_upstreams["inventory"], fanout_upstreams["pricing"]
    inventory.route("GET", "/stock/{sku}", json={"sku": "{sku}", "available": 3}, delay_ms=40)
    pricing.route("POST", "/quote", handler="shop.stubs:quote", delay_ms=80)
    return fanout


def test_basket_checks_all_stock_at_once_then_quotes_once(shop):
    m = shop.measure("/basket", method="POST", json=BASKET, repeat=3, ideal_s=0.040 + 0.080)
    shop.assert_concurrency(m, peak=10, requests=10, upstream="inventory")
    shop.assert_concurrency(m, peak=1, requests=1, upstream="pricing")
    shop.assert_no_blocking(m)
    assert m.efficiency > 0.5  # two stages: one inventory wave, then one quote


def test_the_quote_asks_for_every_sku_in_stock(shop, fanout_upstreams):
    answer = shop.post("/basket", json=BASKET)
    assert answer.json() == {"in_stock": 10, "total": 2500}
    [quote] = fanout_upstreams["pricing"].assert_called("POST", "/quote", times=1)
    assert quote.json() == {"skus": SKUS}
    assert quote.headers["content-type"] == "application/json"
    stock = fanout_upstreams["inventory"].assert_called("GET", "/stock/{sku}", times=10)
    assert sorted(r.path for r in stock) == sorted(f"/stock/{sku}" for sku in SKUS)


def test_out_of_stock_skus_are_not_priced(shop, fanout_upstreams):
    fanout_upstreams["inventory"].route(
        "GET", "/stock/sku-3", json={"sku": "sku-3", "available": 0}
    )
    assert shop.post("/basket", json=BASKET).json()["in_stock"] == 9
    [quote] = fanout_upstreams["pricing"].requests("POST", "/quote")
    assert "sku-3" not in quote.json()["skus"]


def test_a_slow_pricing_service_slows_only_its_stage(shop, fanout_upstreams):
    # The same route again replaces it: now with a long tail (median 300 ms, p99 900 ms).
    fanout_upstreams["pricing"].route(
        "POST", "/quote", handler="shop.stubs:quote", delay_ms=300, p99_ms=900
    )
    m = shop.measure("/basket", method="POST", json=BASKET, repeat=2)
    shop.assert_concurrency(m, peak=10, upstream="inventory")
    warmup, held_probe, *measured = fanout_upstreams["pricing"].requests("POST", "/quote")
    assert len(measured) == 2  # one quote per sample, each with its own delay from the tail
    assert m.max_s >= max(q.delay_ms for q in measured) / 1000  # the shop waited for it


@pytest.mark.fanout_upstream(upstream="inventory", error_rate=1, error_status=503)
def test_a_failing_inventory_is_not_handled(shop, fanout_upstreams):
    # The marker's behaviour applies to routed paths too (the route sets no error_rate).
    assert shop.post("/basket", json=BASKET).status_code == 500
    assert fanout_upstreams["pricing"].requests() == []  # never asked for a quote


def test_shared_clients_reuse_their_connections(shop):
    m = shop.measure("/basket", method="POST", json=BASKET, repeat=3)
    shop.assert_connection_reuse(m)  # no new TCP connection in any sample after warm-up
    assert m.upstream("inventory").connections_per_sample == [0, 0, 0]
    assert m.connections_opened == 0


def test_a_client_built_per_request_is_caught(shop):
    m = shop.measure("/basket-new-client-each-time", method="POST", json=BASKET, repeat=2)
    assert m.upstream("inventory").connections_per_sample == [10, 10]  # one per call
    assert m.upstream("pricing").connections_per_sample == [1, 1]
    with pytest.raises(FanoutAssertionError, match="no connection was reused") as caught:
        shop.assert_connection_reuse(m)
    assert ("every one of the 10 calls at upstream 'inventory' arrived on a new connection") in str(
        caught.value
    )
