"""The shelf service's paths measured as its team would, with the repeat most tests use:
the A/B gate takes what its CPU rule needs beyond it."""

import pytest


@pytest.fixture
def shelf(fanout, fanout_upstreams):
    books = fanout_upstreams["books"]
    books.route("GET", "/books/{i}", json={"title": "book {i}"}, delay_ms=20)
    books.route("GET", "/pages/{i}", json={"page": "{i}"}, delay_ms=10)
    return fanout


def test_shelf(shelf):
    m = shelf.measure("/shelf/24", repeat=10)
    assert m.upstream("books").requests == 24


def test_pages(shelf):
    m = shelf.measure("/pages", repeat=10)
    assert m.upstream("books").requests == 31
