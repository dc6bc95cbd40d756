"""The pytest plugin: options, fixtures, the upstream marker, log tails and the summary.

Fixtures, layered like pytest-httpserver's: the session-scoped
`fanout_upstream` and `fanout_server` run real processes once per session
(per xdist worker); the function-scoped `fanout` facade is cheap and puts
the upstream back as it found it after every test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_fanout import hookspecs
from pytest_fanout._table import render_text
from pytest_fanout.fixture import Fanout
from pytest_fanout.measure import Measurement
from pytest_fanout.patterns import efficiency_cell
from pytest_fanout.results import is_xdist_worker, session_load_results, session_measurements
from pytest_fanout.servers.process import ServerProcess, ServerStartError
from pytest_fanout.servers.stack import DEFAULT_APP, AppServer, StubUpstreamServer
from pytest_fanout.servers.upstream import Behaviour, ConfigError

MARKER = "fanout_upstream"
SERVERS_KEY = pytest.StashKey[list[ServerProcess]]()
XDIST_KEY = "fanout_measurements"
XDIST_LOAD_KEY = "fanout_load_results"


# ---- options ---------------------------------------------------------------

OPTIONS: list[tuple[str, str, str, Any]] = [
    # (name, ini type, help, default)
    ("fanout_app", "string",
     "ASGI import string of the app under test, MODULE:ATTR (default: the reference app)",
     DEFAULT_APP),
    ("fanout_app_dir", "string",
     "directory the app is imported from (default: the rootdir)", None),
    ("fanout_app_factory", "bool",
     "the import string names a factory to call for the app", False),
    ("fanout_delay_ms", "string",
     "the stub upstream's default delay in ms (default: 100)", "100"),
    ("fanout_startup_timeout", "string",
     "seconds each server process may take to answer (default: 10)", "10"),
]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fanout", "fan-out testing (pytest-fanout)")
    for name, kind, help_text, default in OPTIONS:
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            group.addoption(flag, action="store_true", default=None, dest=name, help=help_text)
        else:
            group.addoption(flag, action="store", default=None, dest=name, help=help_text)
        parser.addini(name, help_text, type=kind, default=default)
    parser.addini(
        "fanout_app_env",
        "KEY=VALUE lines added to the app process's environment",
        type="linelist",
        default=[],
    )


def setting(config: pytest.Config, name: str) -> Any:
    """An option's value: the command line wins over the ini file."""
    value = config.getoption(name)
    return config.getini(name) if value is None else value


def _positive_float(config: pytest.Config, name: str) -> float:
    raw = setting(config, name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value >= 0 or (name == "fanout_startup_timeout" and value == 0):
        flag = "--" + name.replace("_", "-")
        raise pytest.UsageError(f"{flag} (ini {name}) must be a positive number, got {raw!r}")
    return value


def app_env(config: pytest.Config) -> dict[str, str]:
    env = {}
    for line in config.getini("fanout_app_env"):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"fanout_app_env: {line!r} is not KEY=VALUE")
        env[key.strip()] = value.strip()
    return env


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**behaviour): set the stub upstream's behaviour for one test "
        "(delay_ms, jitter_ms, error_rate, error_status, drop_rate, max_inflight)",
    )
    _positive_float(config, "fanout_delay_ms")
    _positive_float(config, "fanout_startup_timeout")
    app = setting(config, "fanout_app")
    if ":" not in app:
        raise pytest.UsageError(f"--fanout-app must be MODULE:ATTR, got {app!r}")
    app_env(config)
    config.stash[SERVERS_KEY] = []


# ---- fixtures --------------------------------------------------------------


def _start(server: ServerProcess, config: pytest.Config) -> None:
    config.hook.pytest_fanout_server_setup(server=server, config=config)
    config.stash[SERVERS_KEY].append(server)
    try:
        server.start()
        return
    except ServerStartError as exc:
        tail = "\n".join("  | " + line for line in exc.log_tail.splitlines())
        message = f"pytest-fanout: {exc}\n{tail}"
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback


@pytest.fixture(scope="session")
def fanout_upstream(pytestconfig: pytest.Config) -> Iterator[StubUpstreamServer]:
    """The stub upstream in its own process: `.url`, `.stats()`, `.reset()`, `.configure()`."""
    behaviour = Behaviour(delay_ms=_positive_float(pytestconfig, "fanout_delay_ms"))
    server = StubUpstreamServer(
        behaviour, startup_timeout=_positive_float(pytestconfig, "fanout_startup_timeout")
    )
    _start(server, pytestconfig)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fanout_server(
    pytestconfig: pytest.Config, fanout_upstream: StubUpstreamServer
) -> Iterator[AppServer]:
    """The app under test under uvicorn in its own process, calling `fanout_upstream`."""
    app_dir = setting(pytestconfig, "fanout_app_dir") or str(pytestconfig.rootpath)
    if not Path(app_dir).is_absolute():
        app_dir = str(pytestconfig.rootpath / app_dir)
    server = AppServer(
        setting(pytestconfig, "fanout_app"),
        upstream_url=fanout_upstream.url,
        env=app_env(pytestconfig),
        app_dir=app_dir,
        factory=bool(setting(pytestconfig, "fanout_app_factory")),
        startup_timeout=_positive_float(pytestconfig, "fanout_startup_timeout"),
    )
    _start(server, pytestconfig)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _fanout_upstream_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Apply @pytest.mark.fanout_upstream(...) for one test, then restore."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        yield
        return
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword arguments only")
    upstream: StubUpstreamServer = request.getfixturevalue("fanout_upstream")
    try:
        Behaviour().update(marker.kwargs)
    except ConfigError as exc:
        pytest.fail(f"@pytest.mark.{MARKER}: {exc}", pytrace=False)
    upstream.configure(**marker.kwargs)
    try:
        yield
    finally:
        upstream.restore()


@pytest.fixture
def fanout(
    request: pytest.FixtureRequest,
    fanout_server: AppServer,
    fanout_upstream: StubUpstreamServer,
) -> Iterator[Fanout]:
    """Measure paths of the app under test and assert on them; upstream restored afterwards."""
    config = request.config

    def record(measurement: Measurement) -> None:
        session_measurements(config).append(measurement)
        config.hook.pytest_fanout_measurement(measurement=measurement, item=request.node)

    facade = Fanout(fanout_server, fanout_upstream, test=request.node.nodeid,
                    on_measurement=record)
    try:
        yield facade
    finally:
        facade.close()
        fanout_upstream.restore()


# ---- reports ---------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the servers' log tails to the report of a failing test."""
    report = yield
    if report.failed and SERVERS_KEY in item.config.stash:
        used = set(getattr(item, "fixturenames", ()))
        if used & {"fanout", "fanout_server", "fanout_upstream", "fanout_load"}:
            for server in item.config.stash[SERVERS_KEY]:
                tail = server.log_tail() or "(it has printed nothing)"
                title = f"fanout {server.name} log (last lines)"
                report.sections.append((title, tail))
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if is_xdist_worker(config):
        # Hand the worker's measurements to the controller (see pytest_testnodedown).
        config.workeroutput[XDIST_KEY] = [m.to_dict() for m in session_measurements(config)]
        config.workeroutput[XDIST_LOAD_KEY] = [r.to_dict() for r in session_load_results(config)]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect each worker's measurements and load results (summary, gate)."""
    from pytest_fanout.load.results import LoadResult

    output = getattr(node, "workeroutput", {}) or {}
    measurements = session_measurements(node.config)
    for data in output.get(XDIST_KEY, []):
        measurements.append(Measurement.from_dict(data))
    load_results = session_load_results(node.config)
    for data in output.get(XDIST_LOAD_KEY, []):
        load_results.append(LoadResult.from_dict(data))


def summary_rows(measurements: list[Measurement]) -> list[list[object]]:
    rows = []
    for m in measurements:
        rows.append(
            [
                m.test.split("::")[-1] if m.test else "-",
                m.path,
                f"{m.median_s * 1000:.1f} ms",
                f"{m.p95_s * 1000:.1f} ms",
                m.upstream_peak_inflight,
                efficiency_cell(m),  # marked when the route blocked the loop
                f"{m.loop_lag_max_s * 1000:.1f} ms",
            ]
        )
    return rows


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    measurements = session_measurements(config)
    if not measurements or is_xdist_worker(config):
        return
    terminalreporter.write_sep("=", "fan-out measurements")
    headers = ["test", "path", "median", "p95", "upstream peak", "efficiency", "loop lag"]
    terminalreporter.write_line(render_text(headers, summary_rows(measurements)))


def pytest_unconfigure(config: pytest.Config) -> None:
    # Anything a crashed fixture did not stop (a safety net; teardown normally did it).
    for server in config.stash.get(SERVERS_KEY, []):
        server.stop(grace_s=1.0)
