"""The shop again, as a Flask (WSGI) service: the sync pattern, done with threads.

`POST /basket` checks every SKU's stock at the inventory service at once, on
a thread pool over one shared `requests` session, then asks the pricing
service for a quote. `POST /basket-one-by-one` asks for each SKU in turn (the
mistake the tests catch). Base URLs come from two environment variables.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import requests
from flask import Flask, request

INVENTORY_URL = os.environ["INVENTORY_URL"]
PRICING_URL = os.environ["PRICING_URL"]

session = requests.Session()
session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
pool = ThreadPoolExecutor(max_workers=32)
app = Flask(__name__)


def stock(sku: str) -> dict:
    answer = session.get(f"{INVENTORY_URL}/stock/{sku}", timeout=10)
    answer.raise_for_status()
    return answer.json()


def quote(stocks: list[dict]) -> dict:
    in_stock = [s["sku"] for s in stocks if s["available"] > 0]
    answer = session.post(f"{PRICING_URL}/quote", json={"skus": in_stock}, timeout=10)
    answer.raise_for_status()
    return {"in_stock": len(in_stock), "total": answer.json()["total"]}


@app.post("/basket")
def basket():
    return quote(list(pool.map(stock, request.get_json()["skus"])))


@app.post("/basket-one-by-one")
def basket_one_by_one():
    return quote([stock(sku) for sku in request.get_json()["skus"]])
