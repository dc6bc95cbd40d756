"""The shop example runs with its own ini (pytest-shop.ini); the suite's session, which
runs the reference app, leaves it out (tests/e2e/test_shop_example.py runs it)."""

from pathlib import Path

import pytest

SHOP_TESTS = Path(__file__).with_name("test_shop_service.py")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path == SHOP_TESTS and config.getini("fanout_app") != "shop.service:app":
        return True
    return None
