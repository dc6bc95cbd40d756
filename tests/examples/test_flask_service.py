"""Testing a Flask service: the same harness, the same exact counts as for FastAPI.

pytest-flask.ini names the Flask app; the harness sees it is a WSGI app and
serves it through a2wsgi's thread pool. The upstream stubs, routes, gauges and
diagnosis are the ones every app gets.
"""

import pytest

from pytest_fanout import FanoutAssertionError

SKUS = [f"sku-{i}" for i in range(10)]
BASKET = {"skus": SKUS}


@pytest.fixture
def shop(fanout, fanout_upstreams):
    inventory, pricing = fanout_upstreams["inventory"], fanout_upstreams["pricing"]
    inventory.route("GET", "/stock/{sku}", json={"sku": "{sku}", "available": 3}, delay_ms=40)
    pricing.route("POST", "/quote", handler="flask_shop.stubs:quote", delay_ms=80)
    return fanout


def test_basket_checks_all_stock_at_once_on_threads(shop):
    m = shop.measure("/basket", method="POST", json=BASKET, repeat=3, ideal_s=0.040 + 0.080)
    shop.assert_concurrency(m, peak=10, requests=10, upstream="inventory")
    shop.assert_concurrency(m, peak=1, requests=1, upstream="pricing")
    shop.assert_no_blocking(m)  # the work runs on threads: the loop stays free


def test_the_answer_is_the_quote(shop, fanout_upstreams):
    assert shop.post("/basket", json=BASKET).json() == {"in_stock": 10, "total": 2500}
    [quote] = fanout_upstreams["pricing"].assert_called("POST", "/quote", times=1)
    assert quote.json() == {"skus": SKUS}


def test_one_sku_at_a_time_is_caught(shop):
    m = shop.measure(
        "/basket-one-by-one", method="POST", json=BASKET, repeat=2, n=10, concurrency=10
    )
    with pytest.raises(FanoutAssertionError, match="the calls ran one at a time"):
        shop.assert_concurrency(m, peak=10, upstream="inventory")
    assert [f.kind for f in shop.diagnose(m)] == ["sequential"]
