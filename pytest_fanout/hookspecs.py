"""Hooks that other plugins and conftest.py files can implement.

Registered by `pytest_fanout.plugin` in `pytest_addhooks`; each one is
documented here, where it is declared (as pytest-xdist does in newhooks.py).

A conftest.py that implements one of them while pytest-fanout may not be
loaded (``-p no:pytest_fanout``, autoload off) must mark it optional, or
pytest stops with "unknown hook"::

    @pytest.hookimpl(optionalhook=True)
    def pytest_fanout_path_shape(path):
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_fanout.load.results import LoadResult
    from pytest_fanout.measurement import Measurement
    from pytest_fanout.servers.process import ServerProcess


@pytest.hookspec()
def pytest_fanout_server_setup(server: ServerProcess, config: pytest.Config) -> None:
    """Change a server process before it starts.

    Called for each stub upstream and for the app just before its child is
    spawned: ``server.name`` is ``"app"``, ``"upstream"`` for the single
    default upstream, or ``"upstream-NAME"`` for a named one (its name is
    also ``server.upstream_name``). Edit
    ``server.env`` (a dict of environment variables added to the child's),
    ``server.app``, ``server.app_dir``, ``server.startup_timeout`` or
    ``server.log_level`` in place; for example, point the app at your own
    settings::

        def pytest_fanout_server_setup(server, config):
            if server.name == "app":
                server.env["MY_SERVICE_TIMEOUT_S"] = "2"
    """


@pytest.hookspec(firstresult=True)
def pytest_fanout_path_shape(path: str) -> tuple[int, int] | None:
    r"""Say how a path of your app fans out: ``(n, concurrency)``, or None if unknown.

    ``fanout.measure(path)`` asks this hook when the test gives neither
    ``n=`` nor ``concurrency=``; the answer gives the ideal wall time
    (upstream delay x ceil(n / concurrency)) and so the efficiency. The first
    implementation that returns something other than None wins. The harness
    itself knows no path: the reference app's shapes are implemented in its
    test set-up (``tests/reference_shapes.py``)::

        import re

        def pytest_fanout_path_shape(path):
            if m := re.fullmatch(r"/prices/(\d+)", path.split("?")[0]):
                return int(m[1]), int(m[1])  # n calls, all at once
            return None
    """


@pytest.hookspec(firstresult=True)
def pytest_fanout_sampler(
    server: ServerProcess, item: pytest.Item
) -> Callable[..., Measurement] | None:
    """Say how the test's ``fanout.measure`` takes a measurement, or None for the default.

    Called once per test that uses the ``fanout`` fixture, with the app
    server it measures. Return a callable that takes the place of
    ``pytest_fanout.measure.measure``: the same arguments, that is the
    client, the app's URL and one ``Request`` (method, path, body, headers,
    expected status), then ``upstreams=``, ``app=``, ``repeat=``,
    ``warmup=``, ``n=``, ``concurrency=``, ``ideal_s=``, ``shape=`` and
    ``held_probe=`` as keywords; it returns a ``Measurement``. The gate's A/B
    mode (``--fanout-ab``) returns one that alternates every sample between
    this app and the base commit's::

        from pytest_fanout.measure import measure

        def pytest_fanout_sampler(server, item):
            def sampler(client, app_url, request, **keywords):
                print("measuring", request.label)
                return measure(client, app_url, request, **keywords)
            return sampler
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
    regression gate in the session object (``FanoutSession.of(config).load_results``).
    """
