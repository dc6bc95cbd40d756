"""The quote path measured as its team would: no n, no ideal time; the gate does the rest."""

import pytest

ORDER = {"items": [f"sku-{i}" for i in range(8)], "currency": "USD"}


@pytest.fixture
def quoting(fanout, fanout_upstreams):
    catalog, rates = fanout_upstreams["catalog"], fanout_upstreams["rates"]
    catalog.route("GET", "/items/{sku}", json={"sku": "{sku}", "cents": 250}, delay_ms=40)
    rates.route("POST", "/rate", json={"rate": 1.25}, delay_ms=30)
    return fanout


def test_quote(quoting):
    # Measured only, as docs/gating.md teaches: the gate alone must see a regression here.
    answer = quoting.measure("/quote", method="POST", json=ORDER, repeat=10)
    assert answer.upstream("catalog").requests == 8
