"""The regression gate in pytest: --fanout-save, --fanout-compare, --fanout-ab, --fanout-fail-on.

With --fanout-ab the base commit's app is started beside the working tree's
at the first `fanout` test (gate.ab): this plugin's `pytest_fanout_sampler`
gives each test's `fanout` object the alternating sampler, and each base
measurement is paired with its head twin in `pytest_fanout_measurement`.
The gate's modules load only when a gate option is given (this one is loaded
by every pytest run).

Options are checked in `pytest_configure` (a bad rule or an unreadable
baseline stops the run before any test, with one line); the session's
measurements and Locust results (`fanout_load`) are saved and compared in
`pytest_sessionfinish`, which also turns a regression into a non-zero exit
status even when every test passed; `pytest_terminal_summary` prints the
verdict table and one line per regressed case. The logic itself lives in `pytest_fanout.gate`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_fanout.limits import ExitCode
from pytest_fanout.plugin import (
    PREFIX,
    FanoutSession,
    is_xdist_worker,
    option_value,
    session_load_results,
    session_measurements,
)
from pytest_fanout.spec import OPTIONS, add_inis, add_options, options_for

if TYPE_CHECKING:
    from pytest_fanout import gate
    from pytest_fanout.gate.ab import AlternatingSampler, BaseWorktree
    from pytest_fanout.measurement import Measurement
    from pytest_fanout.servers.process import ServerProcess
    from pytest_fanout.servers.stack import AppServer


class FanoutPowerWarning(UserWarning):
    """A measured case whose sample count can never reach the gate's alpha."""


@dataclass
class ABState:
    """--fanout-ab: the base commit, its worktree and app server, and its measurements."""

    ref: str
    repo: Path
    commit: str
    worktree: BaseWorktree | None = None
    server: AppServer | None = None
    sampler: AlternatingSampler | None = None
    measurements: list[Measurement] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    failed: str = ""
    #: id(measurement) -> (it, the samples the gate took itself for it), head's and base's.
    pools: dict[int, tuple[Measurement, dict[str, Any]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.ref} ({self.commit[:12]})"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.worktree is not None:
            self.worktree.stop()


@dataclass
class GateState:
    """What this session's gate was asked to do, and what it found."""

    config: gate.GateConfig
    save: Path | None = None
    report_md: Path | None = None
    baseline: gate.Run | None = None
    comparison: gate.Comparison | None = None
    saved: Path | None = None
    cases: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: str = ""
    #: Why --fanout-save left an existing baseline as it was ("" when it saved).
    skipped_save: str = ""
    ab: ABState | None = None
    #: The app server (the head's): the environment it actually ran with goes in the context.
    app_server: ServerProcess | None = None


GATE_KEY = pytest.StashKey[GateState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The gate's options and ini keys, declared once in `pytest_fanout.spec.OPTIONS`."""
    group = parser.getgroup("fanout-gate", "fan-out regression gate (pytest-fanout)")
    add_options(group.addoption, prefix=PREFIX, group="gate", front_end="pytest", typed=False)
    add_inis(parser.addini, group="gate")


#: Metavars of the options whose value is a file or a folder.
_PATH_METAVARS = ("PATH", "FILE", "DIR")


def path_flags() -> dict[str, str]:
    """pytest's path options (flag -> metavar): `--fanout-save`, `--fanout-config`, ...,
    from the one registry."""
    flags = {}
    for option in OPTIONS.values():
        if option.metavar in _PATH_METAVARS and "pytest" in option.front_ends:
            for flag in (option.flag(PREFIX), *option.aliases.get("pytest", ())):
                flags[flag] = option.metavar
    return flags


def spaced_path_option(args: list[str]) -> str | None:
    """Why `args` cannot be run as given (one line), or None: a path option given with its
    value apart (`--fanout-save PATH`). pytest picks the rootdir and its config file from
    the arguments that name paths before a plugin's options are known (`_preparse` calls
    `determine_setup` before the plugins load), so the PATH given apart is taken for a test
    path: the rootdir moves and pyproject.toml is not read. Only the `=` form (what `--help`
    shows) is safe."""
    flags = path_flags()
    for index, arg in enumerate(args):
        if arg == "--":
            return None
        if arg in flags:
            value = args[index + 1] if index + 1 < len(args) else flags[arg]
            return (
                f"{arg} {value}: write {arg}={value} (given apart, pytest takes {value} for a"
                " test path before it knows the option, and picks the rootdir and the"
                " config file from it)"
            )
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """Refuse a path option given in the space form, before the stack is read from a
    pyproject.toml that pytest may not have found (issue 32 #16)."""
    problem = spaced_path_option(list(args))
    if problem is not None:
        raise pytest.UsageError(problem)


def _option(config: pytest.Config, key: str) -> Any:
    """A gate option's value: the flag, else its ini key (None when neither gives one)."""
    return option_value(config, key)[0]


def _path(config: pytest.Config, value: str | None) -> Path | None:
    if value is None:
        return None
    if not value.strip():
        raise pytest.UsageError("a --fanout-save/--fanout-compare/--fanout-report-md path is empty")
    path = Path(value).expanduser()
    return path if path.is_absolute() else config.invocation_params.dir / path


def pytest_configure(config: pytest.Config) -> None:
    """Check every gate option and read the baseline now, before any test runs."""
    if is_xdist_worker(config):
        return  # xdist worker: the controller saves and compares
    # --fanout-allow-ungated alone asks for no gate.
    if not any(
        _option(config, key)
        for key in options_for("pytest", "gate")
        if key not in ("allow_ungated", "save_failed")
    ):
        return  # no gate in this run: its modules (pydantic, statistics) are not loaded
    from pytest_fanout import gate
    from pytest_fanout.gate.ab import resolve_ref

    try:
        gate_config = gate.GateConfig.from_options(
            _option(config, "fail_on"), _option(config, "alpha"), _option(config, "allow_ungated")
        )
        state = GateState(
            gate_config,
            save=_path(config, _option(config, "save")),
            report_md=_path(config, _option(config, "report_md")),
        )
        compare = _path(config, _option(config, "compare"))
        ab_ref = _option(config, "ab") or None
        if ab_ref is not None and compare is not None:
            raise gate.GateError("give --fanout-ab or --fanout-compare, not both")
        if compare is not None:
            state.baseline = gate.Run.load(compare)
            state.baseline.source = _option(config, "compare")
        if ab_ref is not None:
            if config.getoption("numprocesses", None):
                raise gate.GateError("--fanout-ab measures head and base in one process: drop -n")
            repo, commit = resolve_ref(config.rootpath, ab_ref)
            state.ab = ABState(ab_ref, repo, commit)
            state.config = state.config.for_ab()
    except gate.GateError as exc:
        raise pytest.UsageError(f"pytest-fanout gate: {exc}") from None
    for target in (state.save, state.report_md):
        if target is not None and target.is_dir():
            raise pytest.UsageError(f"pytest-fanout gate: {target} is a directory, give a file")
    config.stash[GATE_KEY] = state


def _active(state: GateState | None) -> bool:
    return state is not None and (
        state.save is not None
        or state.report_md is not None
        or state.baseline is not None
        or state.ab is not None
    )


def pytest_fanout_server_setup(server: ServerProcess, config: pytest.Config) -> None:
    """Keep the app server: the context records the environment it actually ran with."""
    state = config.stash.get(GATE_KEY, None)
    if state is not None and server.name == "app":
        state.app_server = server


def _stub_urls(config: pytest.Config) -> list[str]:
    """The stub upstreams' URLs (random ports): left out of the recorded settings."""
    from pytest_fanout.servers.stack import AppServer

    servers = FanoutSession.of(config).servers
    return [s.url for s in servers if not isinstance(s, AppServer)]


def _app_context(config: pytest.Config, root: Path, server: ServerProcess | None) -> dict:
    from pytest_fanout.gate.runs import collect_context

    env = server.env if server is not None else None
    return collect_context(root, app_env=env, hide=_stub_urls(config))


def _start_base(
    ab: ABState, head: AppServer, config: pytest.Config, wants: Any
) -> AlternatingSampler:
    """The base worktree and its app server, once a session; a failure ends the run (one line).
    `wants`: what the rules want beyond a test's repeat (the sampler takes it itself)."""
    from pytest_fanout import gate
    from pytest_fanout.gate.ab import AlternatingSampler, BaseWorktree, base_app_server
    from pytest_fanout.servers.process import ServerStartError

    if ab.sampler is not None:
        return ab.sampler
    if not ab.failed:
        try:
            ab.worktree = BaseWorktree(ab.repo, ab.commit)
            path = ab.worktree.create()
            ab.server = base_app_server(head, ab.repo, path)
            FanoutSession.of(config).servers.append(ab.server)  # log tails, safety net
            ab.server.start()
            ab.context = _app_context(config, path, ab.server)
            ab.sampler = AlternatingSampler(ab.server, ab.label, wants=wants)
            return ab.sampler
        except (gate.GateError, ServerStartError) as exc:
            ab.failed = f"pytest-fanout A/B: the base app at {ab.label} cannot start: {exc}"
            ab.stop()
    pytest.exit(ab.failed, returncode=ExitCode.TARGET_UNUSABLE)


def pytest_fanout_sampler(server: AppServer, item: pytest.Item) -> AlternatingSampler | None:
    """--fanout-ab: the test's `fanout.measure` alternates samples between head and base."""
    state = item.config.stash.get(GATE_KEY, None)
    if state is None or state.ab is None:
        return None
    from functools import partial

    from pytest_fanout.gate.verdict import samples_wanted

    wants = partial(samples_wanted, state.config)
    return _start_base(state.ab, server, item.config, wants)


@pytest.hookimpl(optionalhook=True)
def pytest_fanout_measurement(measurement: Measurement, item: pytest.Item | None) -> None:
    """Pair the base's measurement with the head's (A/B); warn when a case has too little power."""
    config = item.config if item is not None else None
    state = config.stash.get(GATE_KEY, None) if config is not None else None
    if not _active(state):
        return
    from pytest_fanout.gate.runs import case_id
    from pytest_fanout.gate.stats import power_note
    from pytest_fanout.gate.verdict import MIN_SAMPLES

    pooled = False
    if state.ab is not None and state.ab.sampler is not None:
        base = state.ab.sampler.take_base()
        pools = state.ab.sampler.take_pools()
        if base is not None:
            base.test = measurement.test
            state.ab.measurements.append(base)
            if pools is not None:  # the gate took the samples the test's repeat lacked
                state.ab.pools[id(measurement)] = (measurement, pools[0])
                state.ab.pools[id(base)] = (base, pools[1])
                pooled = not pools[1]["short"]
    count = len(measurement.samples)
    weak = "" if pooled else power_note(count, count, state.config.alpha, MIN_SAMPLES)
    if weak:
        where = case_id(measurement.test, measurement.path)
        warnings.warn(FanoutPowerWarning(f"{where}: {weak}"), stacklevel=2)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Save, compare, write the reports; a regression makes the exit status non-zero."""
    config = session.config
    state = config.stash.get(GATE_KEY, None)
    if not _active(state):
        return
    if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
        state.skipped = "the session was interrupted: nothing saved or compared"
        return
    if state.ab is not None and state.ab.failed:
        return  # pytest.exit already said it, in one line
    from pytest_fanout import gate
    from pytest_fanout.artifacts import mask_data
    from pytest_fanout.gate.report import write_text

    run = gate.Run.from_session(
        session_measurements(config),
        session_load_results(config),
        _app_context(config, config.rootpath, state.app_server),
    )
    state.cases = len(run.cases)
    if state.ab is not None:
        from pytest_fanout.gate.ab import attach_pools

        attach_pools(run, session_measurements(config), state.ab.pools)
        state.baseline = gate.Run.from_measurements(state.ab.measurements, state.ab.context)
        attach_pools(state.baseline, state.ab.measurements, state.ab.pools)
        state.baseline.source = f"base {state.ab.label}"
    if state.baseline is not None:
        state.comparison = gate.compare_runs(
            state.baseline, run, state.config, same_machine=state.ab is not None
        )
        run.extra["comparison"] = mask_data(state.comparison.to_dict())
    try:
        keep = ""  # a failed or empty session does not replace a baseline unless asked
        if state.save is not None and not _option(config, "save_failed"):
            keep = run.keeps_baseline(state.save, session.testsfailed)
        if keep:
            state.skipped_save = f"{keep}: {state.save} kept (--fanout-save-failed replaces it)"
        elif state.save is not None:
            state.saved = run.save(state.save)
        if state.report_md is not None:
            if state.comparison is not None:
                text = gate.render_comparison_markdown(state.comparison, run)
            else:
                text = gate.render_run_markdown(run)
            write_text(state.report_md, text)
    except gate.GateError as exc:
        state.errors.append(str(exc))
    if state.errors and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
    status = state.comparison.exit_status if state.comparison is not None else 0
    if status and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = status


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The verdict table, then one line per regressed case (what a CI log shows last)."""
    state = config.stash.get(GATE_KEY, None)
    if not _active(state) or (state.ab is not None and state.ab.failed):
        return
    from pytest_fanout import gate

    tr = terminalreporter
    tr.write_sep("=", "fan-out regression gate")
    if state.skipped:
        tr.write_line(f"fanout gate: {state.skipped}", yellow=True)
        return
    comparison = state.comparison
    if comparison is not None:
        tr.write_line(gate.render_comparison_text(comparison))
    if state.saved is not None:
        tr.write_line(f"fanout gate: saved {state.cases} case(s) to {state.saved}")
    if state.skipped_save:
        tr.write_line(f"fanout gate: not saved: {state.skipped_save}", yellow=True)
    if state.report_md is not None and not state.errors:
        tr.write_line(f"fanout gate: wrote the Markdown report to {state.report_md}")
    for error in state.errors:
        tr.write_line(f"fanout gate: error: {error}", red=True, bold=True)
    if comparison is not None:
        for line in gate.regression_lines(comparison):
            tr.write_line(line, red=True, bold=True)
        if comparison.regressions and comparison.config.fail:
            tr.write_line(
                f"fanout gate: {len(comparison.regressions)} regression(s) beyond the limits "
                "and the noise: the run fails",
                red=True,
                bold=True,
            )
        elif comparison.ungated_fails:
            tr.write_line(
                f"fanout gate: {comparison.why_not_gated()}: the run fails (exit "
                f"{gate.EXIT_NOT_GATED}; --fanout-allow-ungated accepts it)",
                red=True,
                bold=True,
            )


def pytest_unconfigure(config: pytest.Config) -> None:
    """--fanout-ab: stop the base app and remove its worktree (also after a failure or Ctrl-C)."""
    state = config.stash.get(GATE_KEY, None)
    if state is not None and state.ab is not None:
        state.ab.stop()
