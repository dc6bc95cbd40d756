"""The pytest plugin: options, the run's state, fixtures, the upstream marker, the summary.

The stack comes from one `StackSpec` (`pytest_fanout.spec`: [tool.fanout], then
the ini, then the command line), read in `pytest_configure` and kept in the
run's `FanoutSession`, a plugin the gate and load plugins read. Fixtures,
layered like pytest-httpserver's: the session-scoped `fanout_upstreams` (one
stub per named upstream, with its declared routes), `fanout_upstream` (the
first) and `fanout_server` run real processes once per session (per xdist
worker); the function-scoped `fanout` facade is cheap, and every upstream a
test used is put back as it was (behaviour, routes, recorded requests) after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from pytest_fanout import hookspecs
from pytest_fanout.spec import (
    OPTIONS,
    SpecError,
    StackSpec,
    add_inis,
    add_options,
    end_early_parse,
    join_dash_values,
    missing_value,
    options_for,
    parse_values,
    resolve,
    value_flags,
)

if TYPE_CHECKING:
    from pytest_fanout.fixture import Fanout
    from pytest_fanout.load.results import LoadResult
    from pytest_fanout.measurement import Measurement
    from pytest_fanout.servers.process import ServerProcess
    from pytest_fanout.servers.stack import AppServer, Stack, StubUpstreamServer

# Heavy modules (the servers, httpx2, the measurement) are imported inside the fixtures
# and hooks that need them: this module is loaded by every pytest run of every project
# where the package is installed (benchmarks/entry_import.py measures the cost).


# ---- the run's state -------------------------------------------------------
# One FanoutSession per pytest session, registered as a plugin: what the run declared
# (the StackSpec) and measured (every Measurement, LoadResult and server process), the
# store the summary, the gate and the load plugins read (`FanoutSession.of(config)`);
# a conftest.py finds it with `config.pluginmanager.get_plugin("fanout_session")`.

PLUGIN_NAME = "fanout_session"


@dataclass(eq=False)
class FanoutSession:
    """The session's declared stack and its results (see above)."""

    spec: StackSpec = field(default_factory=StackSpec)
    #: Every Measurement the session's tests took, in order.
    measurements: list[Measurement] = field(default_factory=list)
    #: Every LoadResult the session's `fanout_load` runs produced, in order.
    load_results: list[LoadResult] = field(default_factory=list)
    #: Every server process the session started (log tails on failure, a safety net).
    servers: list[ServerProcess] = field(default_factory=list)

    @classmethod
    def of(cls, config: pytest.Config) -> FanoutSession:
        """The session object of `config` (an empty one if the plugin did not configure)."""
        found = config.pluginmanager.get_plugin(PLUGIN_NAME)
        if found is None:
            found = cls()
            config.pluginmanager.register(found, PLUGIN_NAME)
        return found

    def to_workeroutput(self) -> dict[str, Any]:
        """What an xdist worker hands its controller (JSON-able)."""
        return {
            "fanout_measurements": [m.to_dict() for m in self.measurements],
            "fanout_load_results": [r.to_dict() for r in self.load_results],
        }

    def add_workeroutput(self, output: dict[str, Any]) -> None:
        """The controller's side of `to_workeroutput`."""
        if output.get("fanout_measurements"):
            from pytest_fanout.measurement import Measurement

            self.measurements += [Measurement.from_dict(d) for d in output["fanout_measurements"]]
        if output.get("fanout_load_results"):
            from pytest_fanout.load.results import LoadResult

            self.load_results += [LoadResult.from_dict(d) for d in output["fanout_load_results"]]


def session_measurements(config: pytest.Config) -> list[Measurement]:
    """The session's measurements (`FanoutSession.of(config).measurements`)."""
    return FanoutSession.of(config).measurements


def session_load_results(config: pytest.Config) -> list[LoadResult]:
    """The session's load results (`FanoutSession.of(config).load_results`)."""
    return FanoutSession.of(config).load_results


def is_xdist_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker: it hands its results to the controller, which reports."""
    return hasattr(config, "workerinput")


MARKER = "fanout_upstream"
UPSTREAM_FIXTURES = {
    "fanout",
    "fanout_upstream",
    "fanout_upstreams",
    "fanout_server",
    "fanout_load",
}
#: pytest's prefix for the stack options (`--fanout-app`, ini `fanout_app`).
PREFIX = "fanout-"


# ---- options: declared once in pytest_fanout.spec ---------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fanout", "fan-out testing (pytest-fanout)")
    add_options(group.addoption, prefix=PREFIX, group="stack", front_end="pytest", typed=False)
    add_inis(parser.addini, group="stack")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(args: list[str]) -> None:
    """`--fanout-rate-limit -1/s` as `--fanout-rate-limit=-1/s` (`spec.join_dash_values`,
    our flags only), before pytest parses the command line for good: the value gets its
    option's own one line, not argparse's "expected one argument" (pytest's documented way
    to change the arguments: `args` in place)."""
    args[:] = join_dash_values(args, value_flags(PREFIX, "pytest"))
    end_early_parse()


def option_value(config: pytest.Config, key: str) -> tuple[Any, str]:
    """An option's raw value and where it was given: the flag, else its ini key (the
    registry's names); (None, "") when neither gives one."""
    option = OPTIONS[key]
    value = config.getoption(option.dest)
    if missing_value(value):  # only when the plugin came too late to join (a conftest's)
        raise pytest.UsageError(f"argument {option.flag(PREFIX)}: expected one argument")
    if value not in (None, False):
        return value, option.flag(PREFIX)
    if option.ini_name:
        ini = config.getini(option.ini_name)
        if ini not in (None, "", [], False):
            ini_file = config.inipath.name if config.inipath is not None else "ini"
            return ini, f"{ini_file}: {option.ini_name}"
    return value, ""


def read_spec(config: pytest.Config) -> StackSpec:
    """The run's StackSpec: [tool.fanout] (or --fanout-config), then the ini, then the
    command line; a bad value is a UsageError in one line naming where it was given."""
    raw: dict[str, Any] = {}
    where: dict[str, str] = {}
    for key in options_for("pytest"):
        value, given = option_value(config, key)
        if given:
            raw[key], where[key] = value, given
    try:
        spec = resolve(parse_values(raw, where), start=config.rootpath, where=where)
    except SpecError as exc:
        raise pytest.UsageError(str(exc)) from None
    if spec.app_dir is None:
        spec.app_dir = str(config.rootpath)
    return spec


def pytest_configure(config: pytest.Config) -> None:
    end_early_parse()  # loaded by a conftest.py: too late to join, but --help shows MS
    config.addinivalue_line(
        "markers",
        f"{MARKER}(upstream=NAME, **behaviour): set a stub upstream's behaviour for one test "
        "(delay_ms, jitter_ms, p99_ms, error_rate, error_status, drop_rate, max_inflight, "
        "rate_limit, burst; "
        "upstream= picks a named upstream, default the first)",
    )
    spec = read_spec(config)
    existing = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if existing is None:
        config.pluginmanager.register(FanoutSession(spec=spec), PLUGIN_NAME)
    else:  # another plugin asked for it first (FanoutSession.of): it gets the spec now
        existing.spec = spec


def _spec(config: pytest.Config) -> StackSpec:
    return FanoutSession.of(config).spec


# ---- fixtures --------------------------------------------------------------


def _fail_start(exc: BaseException) -> NoReturn:
    """One line and the child's log tail for a server that could not start."""
    tail = "\n".join("  | " + line for line in getattr(exc, "log_tail", "").splitlines())
    pytest.fail(f"pytest-fanout: {exc}\n{tail}", pytrace=False)


@pytest.fixture(scope="session")
def _fanout_stack(pytestconfig: pytest.Config) -> Iterator[Stack]:
    """The session's stack (`Stack.from_spec`, the one builder): its stubs start in the
    background at once; the app starts only when a test asks for `fanout_server`."""
    from pytest_fanout.servers.stack import Stack

    session = FanoutSession.of(pytestconfig)

    def setup(server: ServerProcess) -> None:
        pytestconfig.hook.pytest_fanout_server_setup(server=server, config=pytestconfig)
        session.servers.append(server)

    stack = Stack.from_spec(session.spec, on_server=setup)
    stack.start_upstreams()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def fanout_upstreams(_fanout_stack: Stack) -> dict[str, StubUpstreamServer]:
    """Every stub upstream by name (the ini's `fanout_upstreams`, or one named "default"),
    each in its own process: `.url`, `.route()`, `.requests()`, `.stats()`, `.configure()`."""
    from pytest_fanout.servers.process import ServerStartError

    failed: ServerStartError | None = None
    try:
        return _fanout_stack.wait_upstreams()
    except ServerStartError as exc:
        failed = exc  # failed outside the handler: one line, no chained traceback
    _fail_start(failed)


@pytest.fixture(scope="session")
def fanout_upstream(fanout_upstreams: dict[str, StubUpstreamServer]) -> StubUpstreamServer:
    """The first named upstream (or the single default one, in FANOUT_UPSTREAM_URL)."""
    return next(iter(fanout_upstreams.values()))


@pytest.fixture(scope="session")
def fanout_server(_fanout_stack: Stack) -> Iterator[AppServer]:
    """The app under test under uvicorn in its own process, each upstream's URL in the
    environment variable named for it (started while the stubs finish starting)."""
    from pytest_fanout.servers.process import ServerStartError

    failed: ServerStartError | None = None
    try:
        server = _fanout_stack.start_app()
    except ServerStartError as exc:
        failed = exc  # failed outside the handler: one line, no chained traceback
    if failed is not None:
        _fail_start(failed)
    try:
        yield server
    finally:
        _fanout_stack.stop_app()


MARKER_CHANGES_KEY = pytest.StashKey[dict[str, dict[str, Any]]]()


def _marker_changes(item: pytest.Item, names: list[str]) -> dict[str, dict]:
    """upstream name -> behaviour changes from every @pytest.mark.fanout_upstream (closest
    wins), each checked: a bad one is one error line."""
    from pytest_fanout.limits import Behaviour, ConfigError

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
        names = list(_spec(item.config).upstream_env_names())
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
    from pytest_fanout.fixture import Fanout

    config = request.config
    session = FanoutSession.of(config)

    def record(measurement: Measurement) -> None:
        session.measurements.append(measurement)
        config.hook.pytest_fanout_measurement(measurement=measurement, item=request.node)

    def shape(path: str) -> tuple[int, int] | None:
        return config.hook.pytest_fanout_path_shape(path=path)

    # How a measurement is taken: `measure`, unless a plugin gives another way (the
    # gate's A/B mode alternates samples between this app and the base commit's).
    sampler = config.hook.pytest_fanout_sampler(server=fanout_server, item=request.node)
    facade = Fanout(
        fanout_server,
        fanout_upstreams,
        test=request.node.nodeid,
        on_measurement=record,
        timeout_s=session.spec.request_timeout,
        max_answer_bytes=session.spec.get("max_answer_bytes"),
        shape=shape,
        sampler=sampler,
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
    if report.failed:
        used = set(getattr(item, "fixturenames", ()))
        if used & UPSTREAM_FIXTURES:
            for server in FanoutSession.of(item.config).servers:
                tail = server.log_tail() or "(it has printed nothing)"
                title = f"fanout {server.name} log (last lines)"
                report.sections.append((title, tail))
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if is_xdist_worker(config):
        # Hand the worker's measurements to the controller (see pytest_testnodedown).
        config.workeroutput.update(FanoutSession.of(config).to_workeroutput())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect each worker's measurements and load results (summary, gate)."""
    FanoutSession.of(node.config).add_workeroutput(getattr(node, "workeroutput", {}) or {})


SUMMARY_HEADERS = ["test", "path", "median", "p95", "upstream peak", "efficiency", "loop lag"]


def summary_table(measurements: list[Measurement]) -> tuple[list[str], list[list[object]]]:
    """The measurements summary's headers and rows: a first-byte column only when an answer
    was streamed (for the others the first byte is the answer), the finding last."""
    from pytest_fanout.diagnosis import efficiency_cell, headline

    streamed = any(m.streamed for m in measurements)
    headers = [*SUMMARY_HEADERS, "CPU/request", *(["first byte"] if streamed else []), "finding"]
    rows = []
    for m in measurements:
        row: list[object] = [
            m.test.split("::")[-1] if m.test else "-",
            m.path if m.method == "GET" else f"{m.method} {m.path}",
            f"{m.median_s * 1000:.1f} ms",
            f"{m.p95_s * 1000:.1f} ms",
            _peak_cell(m),
            efficiency_cell(m),  # marked when the route blocked the loop
            f"{m.loop_lag_max_s * 1000:.1f} ms",
            _cpu_cell(m),
        ]
        if streamed:
            first = m.first_byte_median_s
            row.append(f"{first * 1000:.1f} ms" if m.streamed and first is not None else "-")
        row.append(headline(m))
        rows.append(row)
    return headers, rows


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
    from pytest_fanout.artifacts import render_text

    measurements = session_measurements(config)
    if not measurements or is_xdist_worker(config):
        return
    terminalreporter.write_sep("=", "fan-out measurements")
    terminalreporter.write_line(render_text(*summary_table(measurements)))


def pytest_unconfigure(config: pytest.Config) -> None:
    # Anything a crashed fixture did not stop (a safety net; teardown normally did it).
    found = config.pluginmanager.get_plugin(PLUGIN_NAME)
    for server in found.servers if found is not None else []:
        server.stop(grace_s=1.0)
