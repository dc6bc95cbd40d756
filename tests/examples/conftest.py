"""The shop examples run with their own ini (pytest-shop.ini, pytest-flask.ini); the suite's
session, which runs the reference app, leaves them out (tests/e2e/test_shop_example.py and
test_flask_example.py run them)."""

from pathlib import Path

import pytest

#: Each example's tests, and the app its own ini names.
OWN_INI = {
    Path(__file__).with_name("test_shop_service.py"): "shop.service:app",
    Path(__file__).with_name("test_flask_service.py"): "flask_shop.service:app",
}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    app = OWN_INI.get(collection_path)
    if app is not None and config.getini("fanout_app") != app:
        return True
    return None
