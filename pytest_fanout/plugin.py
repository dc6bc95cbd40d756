"""The pytest plugin: options, fixtures, the upstream marker, log tails and the summary.

Fixtures, layered like pytest-httpserver's: the session-scoped
`fanout_upstreams` (one stub per named upstream), `fanout_upstream` (the
first) and `fanout_server` run real processes once per session (per xdist
worker); the function-scoped `fanout` facade is cheap, and every upstream a
test used is put back as it was (behaviour, routes, recorded requests) after it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_fanout import hookspecs
from pytest_fanout._table import render_text
from pytest_fanout.diagnose import headline
from pytest_fanout.fixture import Fanout
from pytest_fanout.load.results import LoadResult
from pytest_fanout.measure import Measurement
from pytest_fanout.patterns import efficiency_cell
from pytest_fanout.servers.process import ServerProcess, ServerStartError
from pytest_fanout.servers.routes import MAX_DELAY_MS
from pytest_fanout.servers.stack import (
    DEFAULT_APP,
    DEFAULT_UPSTREAM,
    DEFAULT_UPSTREAM_ENV,
    UPSTREAM_NAME,
    AppServer,
    StubsStarting,
    StubUpstreamServer,
    expand_placeholders,
)
from pytest_fanout.servers.upstream import Behaviour, ConfigError

# ---- the session's store: measurements and load results, for the summary, the gate,
# xdist's hand-over and the other plugins (gate, load), which import it from here.

#: Every Measurement the session's tests took, in order.
MEASUREMENTS_KEY = pytest.StashKey[list[Measurement]]()


def session_measurements(config: pytest.Config) -> list[Measurement]:
    """The session's measurements (an empty list before the first one)."""
    return config.stash.setdefault(MEASUREMENTS_KEY, [])


#: Every LoadResult the session's `fanout_load` runs produced, in order.
LOAD_RESULTS_KEY = pytest.StashKey[list[LoadResult]]()


def session_load_results(config: pytest.Config) -> list[LoadResult]:
    """The session's load results (an empty list before the first one)."""
    return config.stash.setdefault(LOAD_RESULTS_KEY, [])


def is_xdist_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker: it hands its results to the controller, which reports."""
    return hasattr(config, "workerinput")


MARKER = "fanout_upstream"
SERVERS_KEY = pytest.StashKey[list[ServerProcess]]()
XDIST_KEY = "fanout_measurements"
XDIST_LOAD_KEY = "fanout_load_results"
UPSTREAM_FIXTURES = {
    "fanout",
    "fanout_upstream",
    "fanout_upstreams",
    "fanout_server",
    "fanout_load",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---- options ---------------------------------------------------------------

OPTIONS: list[tuple[str, str, str, Any]] = [
    # (name, ini type, help, default)
    (
        "fanout_app",
        "string",
        "ASGI import string of the app under test, MODULE:ATTR (default: the reference app)",
        DEFAULT_APP,
    ),
    (
        "fanout_app_dir",
        "string",
        "directory the app (and stub handlers) are imported from (default: the rootdir)",
        None,
    ),
    ("fanout_app_factory", "bool", "the import string names a factory to call for the app", False),
    ("fanout_delay_ms", "string", "the stub upstreams' default delay in ms (default: 100)", "100"),
    (
        "fanout_startup_timeout",
        "string",
        "seconds each server process may take to answer (default: 10)",
        "10",
    ),
    (
        "fanout_request_timeout",
        "string",
        "seconds one request to the app may take in fanout.measure/request (default: 60)",
        "60",
    ),
    (
        "fanout_stack_sampling",
        "string",
        "on/off: sample the stack that blocks the app's event loop (default: on)",
        "on",
    ),
]

#: name -> (low, high, zero allowed) for the numeric options.
_NUMBER_RANGES: dict[str, tuple[float, float, bool]] = {
    "fanout_delay_ms": (0, MAX_DELAY_MS, True),
    "fanout_startup_timeout": (0, 3600, False),
    "fanout_request_timeout": (0, 86400, False),
}


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
        "KEY=VALUE lines added to the app process's environment; {upstream_url:NAME} is "
        "that upstream's URL",
        type="linelist",
        default=[],
    )
    parser.addini(
        "fanout_upstreams",
        "'NAME ENV_VAR' lines: one stub upstream per line, its URL in the app's ENV_VAR "
        "(default: one upstream in FANOUT_UPSTREAM_URL)",
        type="linelist",
        default=[],
    )


def setting(config: pytest.Config, name: str) -> Any:
    """An option's value: the command line wins over the ini file."""
    value = config.getoption(name)
    return config.getini(name) if value is None else value


def number_setting(config: pytest.Config, name: str) -> float:
    """A numeric option, finite and in its range, or a UsageError in one line."""
    raw = setting(config, name)
    low, high, zero = _NUMBER_RANGES[name]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high and (zero or value > low)):
        flag = "--" + name.replace("_", "-")
        bound = f"from {low:.0f} to {high:.0f}" if zero else f"> {low:.0f} and <= {high:.0f}"
        raise pytest.UsageError(f"{flag} (ini {name}) must be a finite number {bound}, got {raw!r}")
    return value


def upstream_env_names(config: pytest.Config) -> dict[str, str]:
    """name -> the app's environment variable, from the ini's `fanout_upstreams` lines."""
    names: dict[str, str] = {}
    for line in config.getini("fanout_upstreams"):
        parts = line.split()
        if len(parts) != 2:
            raise pytest.UsageError(f"fanout_upstreams: {line!r} is not 'NAME ENV_VAR'")
        name, variable = parts
        if not UPSTREAM_NAME.match(name):
            raise pytest.UsageError(
                f"fanout_upstreams: {name!r} is not an upstream name (letters, digits, _ and -)"
            )
        if not _ENV_NAME.match(variable):
            raise pytest.UsageError(
                f"fanout_upstreams: {variable!r} is not an environment variable name"
            )
        if name in names:
            raise pytest.UsageError(f"fanout_upstreams: upstream {name!r} is named twice")
        if variable in names.values():
            raise pytest.UsageError(f"fanout_upstreams: {variable} is given to two upstreams")
        names[name] = variable
    return names or {DEFAULT_UPSTREAM: DEFAULT_UPSTREAM_ENV}


def app_env(config: pytest.Config, urls: dict[str, str] | None = None) -> dict[str, str]:
    """The ini's `fanout_app_env`, placeholders expanded with `urls` (checked with dummy
    URLs when None: every bad line is a UsageError before any process starts)."""
    if urls is None:
        urls = {name: f"http://127.0.0.1:0/{name}" for name in upstream_env_names(config)}
    env = {}
    for line in config.getini("fanout_app_env"):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"fanout_app_env: {line!r} is not KEY=VALUE")
        try:
            env[key.strip()] = expand_placeholders(value.strip(), urls)
        except ValueError as exc:
            raise pytest.UsageError(f"fanout_app_env: {line!r}: {exc}") from None
    return env


def stack_sampling_env(config: pytest.Config) -> dict[str, str]:
    """The app's environment for --fanout-stack-sampling: off sets PYTEST_FANOUT_STACKS=0."""
    raw = str(setting(config, "fanout_stack_sampling")).strip().lower()
    if raw not in ("on", "off"):
        raise pytest.UsageError(
            f"--fanout-stack-sampling (ini fanout_stack_sampling) must be on or off, got {raw!r}"
        )
    return {"PYTEST_FANOUT_STACKS": "0"} if raw == "off" else {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(upstream=NAME, **behaviour): set a stub upstream's behaviour for one test "
        "(delay_ms, jitter_ms, p99_ms, error_rate, error_status, drop_rate, max_inflight; "
        "upstream= picks a named upstream, default the first)",
    )
    for name in _NUMBER_RANGES:
        number_setting(config, name)
    app = setting(config, "fanout_app")
    if ":" not in app:
        raise pytest.UsageError(f"--fanout-app must be MODULE:ATTR, got {app!r}")
    upstream_env_names(config)
    app_env(config)
    stack_sampling_env(config)
    config.stash[SERVERS_KEY] = []


# ---- fixtures --------------------------------------------------------------


def _fail_start(exc: ServerStartError) -> None:
    tail = "\n".join("  | " + line for line in exc.log_tail.splitlines())
    pytest.fail(f"pytest-fanout: {exc}\n{tail}", pytrace=False)


def _app_dir(config: pytest.Config) -> str:
    app_dir = setting(config, "fanout_app_dir") or str(config.rootpath)
    if not Path(app_dir).is_absolute():
        app_dir = str(config.rootpath / app_dir)
    return app_dir


@pytest.fixture(scope="session")
def _fanout_stubs(pytestconfig: pytest.Config) -> Iterator[StubsStarting]:
    """Every stub upstream, starting in the background (the app starts beside them)."""
    behaviour = Behaviour(delay_ms=number_setting(pytestconfig, "fanout_delay_ms"))
    timeout = number_setting(pytestconfig, "fanout_startup_timeout")
    servers = {
        name: StubUpstreamServer(
            behaviour, name=name, startup_timeout=timeout, app_dir=_app_dir(pytestconfig)
        )
        for name in upstream_env_names(pytestconfig)
    }
    for server in servers.values():
        pytestconfig.hook.pytest_fanout_server_setup(server=server, config=pytestconfig)
        pytestconfig.stash[SERVERS_KEY].append(server)
    starting = StubsStarting(servers)
    try:
        yield starting
    finally:
        starting.stop()


def _raise_start_failure(failed: BaseException | None) -> None:
    """One line and the child's log tail for a server that could not start."""
    if failed is None:
        return
    if not isinstance(failed, ServerStartError):
        raise failed
    _fail_start(failed)


@pytest.fixture(scope="session")
def fanout_upstreams(_fanout_stubs: StubsStarting) -> dict[str, StubUpstreamServer]:
    """Every stub upstream by name (the ini's `fanout_upstreams`, or one named "default"),
    each in its own process: `.url`, `.route()`, `.requests()`, `.stats()`, `.configure()`."""
    _raise_start_failure(_fanout_stubs.wait_ready())
    return _fanout_stubs.servers


@pytest.fixture(scope="session")
def fanout_upstream(fanout_upstreams: dict[str, StubUpstreamServer]) -> StubUpstreamServer:
    """The first named upstream (or the single default one, in FANOUT_UPSTREAM_URL)."""
    return next(iter(fanout_upstreams.values()))


@pytest.fixture(scope="session")
def fanout_server(pytestconfig: pytest.Config, _fanout_stubs: StubsStarting) -> Iterator[AppServer]:
    """The app under test under uvicorn in its own process, each upstream's URL in the
    environment variable named for it (started while the stubs finish starting)."""
    _fanout_stubs.wait_bound()
    _raise_start_failure(_fanout_stubs.failed())
    names = upstream_env_names(pytestconfig)
    urls = {name: server.url for name, server in _fanout_stubs.servers.items()}
    env = {names[name]: url for name, url in urls.items()}
    env.update(app_env(pytestconfig, urls))
    server = AppServer(
        setting(pytestconfig, "fanout_app"),
        env={**env, **stack_sampling_env(pytestconfig)},
        app_dir=_app_dir(pytestconfig),
        factory=bool(setting(pytestconfig, "fanout_app_factory")),
        startup_timeout=number_setting(pytestconfig, "fanout_startup_timeout"),
    )
    pytestconfig.hook.pytest_fanout_server_setup(server=server, config=pytestconfig)
    pytestconfig.stash[SERVERS_KEY].append(server)
    failed: BaseException | None = None
    try:
        server.start()
    except ServerStartError as exc:
        failed = exc
    failed = failed or _fanout_stubs.wait_ready()
    if failed is not None:
        server.stop()
        _raise_start_failure(failed)
    try:
        yield server
    finally:
        server.stop()


MARKER_CHANGES_KEY = pytest.StashKey[dict[str, dict[str, Any]]]()


def _marker_changes(item: pytest.Item, names: list[str]) -> dict[str, dict]:
    """upstream name -> behaviour changes from every @pytest.mark.fanout_upstream (closest
    wins), each checked: a bad one is one error line."""
    changes: dict[str, dict[str, Any]] = {}
    problem = None
    for marker in reversed(list(item.iter_markers(MARKER))):
        kwargs = dict(marker.kwargs)
        name = kwargs.pop("upstream", None) or names[0]
        if marker.args:
            problem = "takes keyword arguments only"
        elif name not in names:
            problem = f"no upstream named {name!r} (the upstreams: {', '.join(names)})"
        else:
            merged = {**changes.get(name, {}), **kwargs}
            try:
                Behaviour().update(merged)
                changes[name] = merged
            except ConfigError as exc:
                problem = str(exc)
        if problem:
            break
    if problem:
        pytest.fail(f"@pytest.mark.{MARKER}: {problem}", pytrace=False)
    return changes


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Check the test's markers before any fixture starts a process for it."""
    if item.get_closest_marker(MARKER) is not None:
        names = list(upstream_env_names(item.config))
        item.stash[MARKER_CHANGES_KEY] = _marker_changes(item, names)


@pytest.fixture(autouse=True)
def _fanout_upstreams_per_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Apply @pytest.mark.fanout_upstream(...) for one test; afterwards put back every
    upstream the test could reach (behaviour, routes, recorded requests)."""
    marked = request.node.get_closest_marker(MARKER) is not None
    if not marked and not UPSTREAM_FIXTURES & set(request.fixturenames):
        yield
        return
    changes = request.node.stash.get(MARKER_CHANGES_KEY, {})
    upstreams: dict[str, StubUpstreamServer] = request.getfixturevalue("fanout_upstreams")
    for name, change in changes.items():
        upstreams[name].configure(**change)
    try:
        yield
    finally:
        for server in upstreams.values():
            if server.running():
                server.restore()


@pytest.fixture
def fanout(
    request: pytest.FixtureRequest,
    fanout_server: AppServer,
    fanout_upstreams: dict[str, StubUpstreamServer],
) -> Iterator[Fanout]:
    """Measure paths of the app under test and assert on them; upstreams restored after."""
    config = request.config

    def record(measurement: Measurement) -> None:
        session_measurements(config).append(measurement)
        config.hook.pytest_fanout_measurement(measurement=measurement, item=request.node)

    def shape(path: str) -> tuple[int, int] | None:
        return config.hook.pytest_fanout_path_shape(path=path)

    facade = Fanout(
        fanout_server,
        fanout_upstreams,
        test=request.node.nodeid,
        on_measurement=record,
        timeout_s=number_setting(config, "fanout_request_timeout"),
        shape=shape,
    )
    try:
        yield facade
    finally:
        facade.close()


# ---- reports ---------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the servers' log tails to the report of a failing test."""
    report = yield
    if report.failed and SERVERS_KEY in item.config.stash:
        used = set(getattr(item, "fixturenames", ()))
        if used & UPSTREAM_FIXTURES:
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
                m.path if m.method == "GET" else f"{m.method} {m.path}",
                f"{m.median_s * 1000:.1f} ms",
                f"{m.p95_s * 1000:.1f} ms",
                _peak_cell(m),
                efficiency_cell(m),  # marked when the route blocked the loop
                f"{m.loop_lag_max_s * 1000:.1f} ms",
                _cpu_cell(m),
                headline(m),
            ]
        )
    return rows


def _peak_cell(m: Measurement) -> object:
    """The peak in flight (the held probe's, the timed one beside it when lower): one for
    one upstream, `name peak` for each of several."""
    names = m.upstream_names
    if not names:
        return m.upstream_peak_inflight
    if len(names) < 2:
        return m.upstream().peak_label
    return ", ".join(f"{name} {m.upstream(name).peak_label}" for name in names)


def _cpu_cell(m: Measurement) -> str:
    """The app's CPU per request (the probe's, median over samples), for the summary."""
    cpu = m.cpu_per_request_s
    return "-" if cpu is None else f"{cpu * 1000:.2f} ms"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    measurements = session_measurements(config)
    if not measurements or is_xdist_worker(config):
        return
    terminalreporter.write_sep("=", "fan-out measurements")
    headers = ["test", "path", "median", "p95", "upstream peak", "efficiency", "loop lag"]
    headers.append("CPU/request")
    headers.append("finding")
    terminalreporter.write_line(render_text(headers, summary_rows(measurements)))


def pytest_unconfigure(config: pytest.Config) -> None:
    # Anything a crashed fixture did not stop (a safety net; teardown normally did it).
    for server in config.stash.get(SERVERS_KEY, []):
        server.stop(grace_s=1.0)
