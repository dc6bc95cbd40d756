"""`fanout capacity`: per path, the highest arrival rate that still meets an SLO.

    fanout capacity --slo-p95-ms 2000                    # the embedded stack's three patterns
    fanout capacity --slo-p95-ms 300 --app myapp.main:app --path /orders/7 --path /health
    fanout capacity --slo-p95-ms 300 --host http://10.0.0.5:8000 --path /orders/7

Each step is one open-model Locust run (`load.capacity.run_step`, a subprocess,
`--processes N` for Locust workers on this machine, `--expect-workers N` for
workers anywhere) at one arrival rate; `load/capacity.py` decides the next rate.
The pool of users of a step is sized from the SLO by Little's law (2 x rate x
SLO, plus 10): a pool that small runs out only once the latency is already past
the SLO. The whole search stays within `--budget-s`, shared out between the
paths. This module parses the flags and prints; bad input is one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pytest_fanout import limits
from pytest_fanout.cli import (
    CommandError,
    add_quiet,
    add_stack_group,
    progress_printer,
    spec_from,
    start_stack,
)
from pytest_fanout.limits import ExitCode, fraction, port_number
from pytest_fanout.load.capacity import (
    MIN_STEP_S,
    STEP_OVERHEAD_S,
    AppRequests,
    CapacityResult,
    SearchSettings,
    Slo,
    StepError,
    StepPlan,
    StepResult,
    TargetGone,
    capacity_table,
    have_matplotlib,
    limit_caps,
    limit_note,
    path_problem,
    run_step,
    search,
    settled_app,
    target_gone,
    write_json,
    write_markdown,
    write_png,
)
from pytest_fanout.load.target import host_problem
from pytest_fanout.spec import StackSpec, add_options, options_for

#: The registry's options of the reference routes (the default paths).
REFERENCE = ("n", "max_concurrent")

#: The SLO's limits beside its p95 and the search's settings: (flag, type, default, help).
_SLO_FLAGS = (
    ("--max-fail-ratio", fraction, 0.01, "failed requests a rate may have (default: 0.01)"),
    (
        "--max-dropped-ratio",
        fraction,
        0.01,
        "starts that found no free user in time (default: 0.01)",
    ),
)
_SEARCH_FLAGS = (
    ("--budget-s", limits.duration_s, 180.0, "the whole search, all paths (default: 180)"),
    (
        "--step-s",
        limits.whole_seconds,
        5,
        f"run time of each step, >= {MIN_STEP_S} (default: 5)",
    ),
    ("--start-rps", limits.rate_rps, 5.0, "the first rate tried (default: 5)"),
    ("--max-rps", limits.rate_rps, 2000.0, "never load faster (default: 2000)"),
    (
        "--precision",
        fraction,
        0.1,
        "stop once the knee is known within this share (default: 0.1)",
    ),
    (
        "--max-users",
        limits.users,
        1000,
        "the most users (requests in flight) a step may have (default: 1000)",
    ),
    (
        "--processes",
        limits.processes,
        None,
        "Locust worker processes per step, on this machine (a distributed run)",
    ),
    (
        "--expect-workers",
        limits.processes,
        None,
        "each step runs Locust as a master and waits for this many workers, which may"
        " run on other hosts (see docs/load-testing.md)",
    ),
    (
        "--master-bind-host",
        str,
        "127.0.0.1",
        "with --expect-workers: the address the master listens on (default: 127.0.0.1)",
    ),
    (
        "--master-bind-port",
        port_number,
        5557,
        "with --expect-workers: the master's port (default: 5557)",
    ),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """The subcommand's arguments (called by `fanout`'s parser builder)."""
    slo = parser.add_argument_group("the SLO")
    slo.add_argument(
        "--slo-p95-ms",
        type=limits.latency_ms,
        required=True,
        help="p95 latency a rate must meet, from each request's intended start",
    )
    for flag, kind, default, help_text in _SLO_FLAGS:
        slo.add_argument(flag, type=kind, default=default, help=help_text)
    search_group = parser.add_argument_group("the search")
    for flag, kind, default, help_text in _SEARCH_FLAGS:
        search_group.add_argument(flag, type=kind, default=default, help=help_text)
    target = parser.add_argument_group("the target (default: the embedded stack)")
    target.add_argument(
        "--host", default=None, help="a running service to load (nothing is started)"
    )
    target.add_argument(
        "--path",
        dest="paths",
        action="append",
        default=None,
        help="a path to search (repeatable); default: the three patterns",
    )
    # --n and --max-concurrent of the default paths: Locust's --fanout-n, --fanout-max-concurrent.
    add_options(target.add_argument, prefix="", front_end="fanout", group="load", keys=REFERENCE)
    add_stack_group(
        parser,
        [k for k in options_for("fanout") if k not in ("request_timeout", "max_answer_bytes")],
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="write one object per path (path, capacity_rps, p95_ms, steps)",
    )
    output.add_argument(
        "--markdown",
        metavar="PATH",
        default=None,
        help="write the table as Markdown, with the SLO, the settings and the machine",
    )
    output.add_argument(
        "--png",
        metavar="PATH",
        default=None,
        help="plot p95 against arrival rate per path, knees marked "
        "(needs matplotlib: pip install 'pytest-fanout[bench]')",
    )
    add_quiet(output)


def _usage(line: str) -> int:
    print(f"fanout capacity: error: {line} (see: fanout capacity --help)", file=sys.stderr)
    return ExitCode.USAGE


def _say(args: argparse.Namespace, line: str) -> None:
    """One progress line (the settings, a step) as it goes; nothing with -q."""
    say = progress_printer(args)
    if say is not None:
        say(line)


def _paths(args: argparse.Namespace) -> list[str]:
    if args.paths:
        return list(args.paths)
    n, bound = args.fanout_calls, args.fanout_semaphore
    return [f"/sync/{n}", f"/async/{n}", f"/async_sem/{n}/{bound}"]


def _slo(args: argparse.Namespace) -> Slo:
    return Slo(args.slo_p95_ms, args.max_fail_ratio, args.max_dropped_ratio)


class UpstreamCalls:
    """The embedded stubs' calls during each step (their counters run on under Locust:
    the difference across a step), for the caps their rate limits put on a path."""

    def __init__(self, upstreams: Mapping[str, Any], app: Any = None) -> None:
        self.upstreams = dict(upstreams)
        #: The embedded app (its probe counts the requests it began and finished), or None.
        self.app = app
        #: Per step rate: (requests, calls each upstream got, requests that ran to their
        #: end or None): the app's counts when read, else the requests Locust counted.
        self.steps: dict[float, tuple[int, dict[str, int], int | None]] = {}

    def app_before(self) -> dict[str, Any]:
        """The app's probe before a step ({} without an app, or once it died: the step's
        death check says so)."""
        from pytest_fanout.servers.process import ServerDiedError

        try:
            return self.app.probe_stats() if self.app is not None else {}
        except ServerDiedError:
            return {}

    def app_after(self, before: dict[str, Any]) -> AppRequests | None:
        """The app's requests over a step, read once it has finished those the step's Locust
        cut off as it quit (so their calls fall in this step, not the next); None without
        an app, or once it died (the step's death check stops the search with its cause)."""
        from pytest_fanout.servers.process import ServerDiedError

        if self.app is None or not before:
            return None
        try:
            return settled_app(self.app.probe_stats, before)
        except ServerDiedError:
            return None

    def counts(self) -> dict[str, int]:
        return {name: int(stub.stats()["requests"]) for name, stub in self.upstreams.items()}

    def limits(self) -> dict[str, dict[str, Any]]:
        return {name: stub.stats().get("limits", {}) for name, stub in self.upstreams.items()}

    def note(self, result: CapacityResult) -> str:
        """The limit that caps `result`'s capacity, from the steps that met the SLO (their
        calls are the path's own, not retries of refused ones), or ""."""
        steps = [self.steps[s.rate] for s in result.passed if s.rate in self.steps]
        requests = sum(r for r, _, _ in steps)
        calls = {name: sum(c.get(name, 0) for _, c, _ in steps) for name in self.upstreams}
        ended = [f for _, _, f in steps]
        finished = sum(f for f in ended if f is not None) if None not in ended else None
        return limit_note(result, limit_caps(self.limits(), calls, requests, finished))


def _step_function(
    args: argparse.Namespace,
    host: str,
    path: str,
    death: Callable[[], str | None] | None = None,
    upstream_calls: UpstreamCalls | None = None,
) -> Callable[[float], StepResult]:
    """One step of the search at a rate, printed (unless -q); TargetGone once the target
    died (the search stops there: a dead app has no capacity)."""
    slo = _slo(args)
    plan = StepPlan(
        step_s=args.step_s,
        max_users=args.max_users,
        processes=args.processes,
        expect_workers=args.expect_workers,
        master_bind_host=args.master_bind_host,
        master_bind_port=args.master_bind_port,
    )

    def step(rate: float) -> StepResult:
        before = upstream_calls.counts() if upstream_calls else {}
        app_before = upstream_calls.app_before() if upstream_calls else {}
        measured, users = run_step(host, path, rate, slo, plan)
        if upstream_calls is not None:
            app = upstream_calls.app_after(app_before)
            after = upstream_calls.counts()
            made = {name: after[name] - before.get(name, 0) for name in after}
            upstream_calls.steps[rate] = (
                (app.began, made, app.finished) if app else (measured.requests, made, None)
            )
        reason = slo.broken_by(measured)
        _say(
            args,
            f"  {path} at {rate:g}/s ({users} users): achieved {measured.achieved_rps:.1f}/s, "
            f"p95 {measured.p95_ms:.0f} ms, {measured.fail_ratio:.1%} failed, "
            f"{measured.dropped_ratio:.1%} dropped: {reason or 'meets the SLO'}",
        )
        gone = target_gone(measured, host, death)
        if gone:
            raise TargetGone(f"{gone} during {path} at {rate:g}/s: no capacity to report")
        return measured

    return step


def run(args: argparse.Namespace) -> int:
    """Search each path, print the table, write --json and --png; return the exit status."""
    paths = _paths(args)
    if args.step_s < MIN_STEP_S:
        return _usage(f"--step-s {args.step_s} is too short to be steady (at least {MIN_STEP_S})")
    one_step = args.step_s + STEP_OVERHEAD_S
    if args.budget_s < one_step * len(paths):
        return _usage(
            f"--budget-s {args.budget_s:g} is too small for one step per path "
            f"({len(paths)} x {one_step:g} s)"
        )
    if args.processes and args.expect_workers:
        return _usage("--processes and --expect-workers exclude each other")
    if args.max_rps < args.start_rps:
        return _usage(f"--max-rps {args.max_rps:g} is below --start-rps {args.start_rps:g}")
    if args.png and not have_matplotlib():
        return _usage("--png needs matplotlib: pip install 'pytest-fanout[bench]'")
    if args.host:
        problem = host_problem(args.host)
        if problem:
            print(f"fanout capacity: error: {problem}", file=sys.stderr)
            return ExitCode.TARGET_UNUSABLE
        return _search_all(args, args.host, paths)
    try:
        spec = spec_from(args)
        stack = start_stack(spec)
    except CommandError as exc:
        return _usage(str(exc))
    args.spec = spec  # for the Markdown report's one line of what ran
    with stack:
        assert stack.app is not None
        _say(
            args,
            f"fanout capacity: {spec.app} at {stack.app.url}, {len(stack.upstreams)} stub"
            f" upstream(s), delay {spec.delay_ms:g} ms",
        )
        app = stack.app
        return _search_all(
            args,
            app.url,
            paths,
            death=lambda: app.death(wait_s=0),
            upstream_calls=UpstreamCalls(stack.upstreams, app),
        )


def _search_all(
    args: argparse.Namespace,
    host: str,
    paths: list[str],
    death: Callable[[], str | None] | None = None,
    upstream_calls: UpstreamCalls | None = None,
) -> int:
    import time

    slo = _slo(args)
    settings = SearchSettings(
        start_rps=args.start_rps,
        max_rps=args.max_rps,
        precision=args.precision,
        step_cost_s=args.step_s + STEP_OVERHEAD_S,
    )
    deadline = time.monotonic() + args.budget_s
    _say(
        args,
        f"fanout capacity: SLO p95 <= {slo.p95_ms:g} ms, failures <= {slo.max_fail_ratio:g}, "
        f"dropped starts <= {slo.max_dropped_ratio:g}; {len(paths)} path(s) in "
        f"{args.budget_s:g} s, {args.step_s} s steps",
    )
    for path in paths:
        problem = path_problem(host, path)
        if problem:
            print(f"fanout capacity: error: {problem}", file=sys.stderr)
            return ExitCode.FAILED
    results: list[CapacityResult] = []
    for index, path in enumerate(paths):
        share = (deadline - time.monotonic()) / (len(paths) - index)
        try:
            step = _step_function(args, host, path, death, upstream_calls)
            results.append(search(path, step, slo, share, settings))
            if upstream_calls is not None:
                results[-1].limited_by = upstream_calls.note(results[-1])
                upstream_calls.steps.clear()  # the next path's steps are its own
        except TargetGone as exc:
            print(f"fanout capacity: error: {exc}", file=sys.stderr)
            return ExitCode.TARGET_UNUSABLE
        except StepError as exc:
            ended = death() if death is not None else None
            if ended:
                print(
                    f"fanout capacity: error: the app process died ({ended}) during {path}:"
                    " no capacity to report",
                    file=sys.stderr,
                )
                return ExitCode.TARGET_UNUSABLE
            print(f"fanout capacity: error: {exc}".splitlines()[0], file=sys.stderr)
            return ExitCode.FAILED
    _say(args, "")  # the steps above, the result below
    print(capacity_table(results))
    for result in results:
        if result.limited_by:
            print(f"{result.path}: {result.limited_by}")
    if args.json:
        write_json(results, args.json)
        print(f"\nwrote {args.json}")
    if args.markdown:
        write_markdown(
            results,
            args.markdown,
            slo=slo,
            step_s=args.step_s,
            budget_s=args.budget_s,
            target=_target_text(args),
        )
        print(f"wrote {args.markdown}")
    if args.png:
        write_png(results, args.png)
        print(f"wrote {args.png}")
    return ExitCode.OK


def _target_text(args: argparse.Namespace) -> str:
    """What was loaded, for the Markdown report's first line."""
    spec: StackSpec | None = getattr(args, "spec", None)
    return args.host or (
        f"{spec.app} with stub upstreams of {spec.delay_ms:g} ms" if spec else "the embedded stack"
    )
