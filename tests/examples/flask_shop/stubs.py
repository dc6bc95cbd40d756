"""Stub handlers for the pricing upstream, run in the stub's own process.

`pricing.route("POST", "/quote", handler="flask_shop.stubs:quote")` imports this
module from the app's directory; the function gets each request and returns
the answer.
"""

from pytest_fanout import StubRequest, StubResponse

#: Price of every SKU, in cents: a fixed list, so totals are exact.
CENTS_PER_SKU = 250


def quote(request: StubRequest) -> dict | StubResponse:
    skus = request.json()["skus"]
    if not skus:
        return StubResponse(status=422, json={"detail": "nothing to price"})
    return {"skus": skus, "total": CENTS_PER_SKU * len(skus)}
