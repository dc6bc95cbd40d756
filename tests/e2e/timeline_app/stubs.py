"""The stub upstreams' routes and handlers for the checkout service (run in the stubs)."""

from __future__ import annotations

from typing import Any


def quote(request: Any) -> dict:
    body = request.json()
    return {"sku": body["sku"], "total": 2.5 * body["qty"]}


#: Upstream name -> environment variable the app reads its URL from.
UPSTREAMS = {
    "auth": "AUTH_URL",
    "inventory": "INVENTORY_URL",
    "pricing": "PRICING_URL",
    "reviews": "REVIEWS_URL",
}

#: The delays (ms) of each route, and the critical-path weight each has in /checkout.
DELAYS_MS = {
    ("auth", "POST", "/token"): 30.0,
    ("auth", "GET", "/user/{user}"): 20.0,
    ("inventory", "GET", "/stock/{sku}"): 40.0,
    ("inventory", "POST", "/reserve"): 20.0,
    ("pricing", "POST", "/quote"): 30.0,
    ("reviews", "GET", "/reviews/{sku}"): 25.0,
    ("reviews", "GET", "/by-user/{user}"): 20.0,
}
CHECKOUT_WEIGHTS = {"auth": 1.0, "inventory": 2.0, "pricing": 3.0, "reviews": 0.0}
ORDER = {"user": "u1", "skus": ["A", "B", "C"]}
#: GET /summary/{user} with by-user at SUMMARY_DELAYS: reviews runs 15 ms beside a 40 ms
#: stock call, so it has 25 ms of slack; the others are paid once each.
SUMMARY_DELAYS = {("reviews", "GET", "/by-user/{user}"): 15.0}
SUMMARY_WEIGHTS = {"auth": 1.0, "inventory": 1.0, "pricing": 1.0, "reviews": 0.0}
SUMMARY_SLACK_MS = 25.0


def install(upstreams: dict[str, Any], delays: dict | None = None) -> None:
    """Give each stub its routes (delays from DELAYS_MS unless `delays` says otherwise)."""
    delays = {**DELAYS_MS, **(delays or {})}
    auth, inventory = upstreams["auth"], upstreams["inventory"]
    pricing, reviews = upstreams["pricing"], upstreams["reviews"]
    auth.route("POST", "/token", json={"token": "t-1"}, delay_ms=delays["auth", "POST", "/token"])
    auth.route(
        "GET",
        "/user/{user}",
        json={"name": "{user}", "level": 2},
        delay_ms=delays["auth", "GET", "/user/{user}"],
    )
    inventory.route(
        "GET",
        "/stock/{sku}",
        json={"sku": "{sku}", "available": 3},
        delay_ms=delays["inventory", "GET", "/stock/{sku}"],
    )
    inventory.route(
        "POST", "/reserve", json={"id": "r-1"}, delay_ms=delays["inventory", "POST", "/reserve"]
    )
    pricing.route(
        "POST",
        "/quote",
        handler="tests.e2e.timeline_app.stubs:quote",
        delay_ms=delays["pricing", "POST", "/quote"],
    )
    reviews.route(
        "GET",
        "/reviews/{sku}",
        json={"sku": "{sku}", "stars": [5, 4]},
        delay_ms=delays["reviews", "GET", "/reviews/{sku}"],
    )
    reviews.route(
        "GET",
        "/by-user/{user}",
        json={"stars": [3]},
        delay_ms=delays["reviews", "GET", "/by-user/{user}"],
    )
