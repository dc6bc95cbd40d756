"""Hooks that other plugins and conftest.py files can implement.

Registered by `pytest_fanout.plugin` in `pytest_addhooks`; each one is
documented here, where it is declared (as pytest-xdist does in newhooks.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_fanout.load.results import LoadResult
    from pytest_fanout.measure import Measurement
    from pytest_fanout.servers.process import ServerProcess


@pytest.hookspec()
def pytest_fanout_server_setup(server: ServerProcess, config: pytest.Config) -> None:
    """Change a server process before it starts.

    Called for the stub upstream and for the app (``server.name`` is
    ``"upstream"`` or ``"app"``) just before the child is spawned. Edit
    ``server.env`` (a dict of environment variables added to the child's),
    ``server.app``, ``server.app_dir``, ``server.startup_timeout`` or
    ``server.log_level`` in place; for example, point the app at your own
    settings::

        def pytest_fanout_server_setup(server, config):
            if server.name == "app":
                server.env["MY_SERVICE_TIMEOUT_S"] = "2"
    """


@pytest.hookspec()
def pytest_fanout_measurement(measurement: Measurement, item: pytest.Item | None) -> None:
    """Called with every finished Measurement, in the test that took it.

    ``item`` is the running test (None outside a test). Use it to report
    measurements elsewhere (a metrics store, a CSV). The measurement is also
    kept for the terminal summary and the regression gate.
    """


@pytest.hookspec()
def pytest_fanout_load_result(result: LoadResult, item: pytest.Item | None) -> None:
    """Called with every finished Locust run of the `fanout_load` fixture.

    ``result`` holds per-endpoint requests, failures, requests/s and
    percentiles (``result.to_dict()`` is JSON-ready). It is also kept for the
    regression gate in ``pytest_fanout.results.session_load_results``.
    """
