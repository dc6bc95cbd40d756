"""The Flask example (tests/examples/test_flask_service.py) runs as its own session, with its
own ini, exactly as the Flask shop's repository would run it: every test passes."""

from __future__ import annotations

from tests.helpers import run_example


def test_flask_example_passes_with_its_own_ini() -> None:
    output = run_example("pytest-flask.ini", "test_flask_service.py")
    assert "3 passed" in output
    assert "sequential (inventory): peak 1 of 10" in output  # the summary's finding
