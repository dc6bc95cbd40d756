"""The shop example (tests/examples/test_shop_service.py) runs as its own session, with its
own ini, exactly as the shop's repository would run it: every test passes."""

from __future__ import annotations

from tests.helpers import run_example


def test_shop_example_passes_with_its_own_ini() -> None:
    output = run_example("pytest-shop.ini", "test_shop_service.py", "-p", "no:randomly")
    assert "7 passed" in output
    assert "POST /basket-new-client-each-time" in output  # in the measurements summary
