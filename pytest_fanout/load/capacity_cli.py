"""`fanout capacity`: per path, the highest arrival rate that still meets an SLO.

    fanout capacity --slo-p95-ms 2000                    # the embedded stack's three patterns
    fanout capacity --slo-p95-ms 300 --app myapp.main:app --path /orders/7 --path /health
    fanout capacity --slo-p95-ms 300 --host http://10.0.0.5:8000 --path /orders/7

Each step is one open-model Locust run (`capacity_locustfile.py`, a subprocess,
`--processes N` for Locust workers on this machine, `--expect-workers N` for
workers anywhere) at one arrival rate; `load/capacity.py`
decides the next rate. The pool of users of a step is sized from the SLO by
Little's law (2 x rate x SLO, plus 10): a pool that small runs out only once
the latency is already past the SLO. The whole search stays within
`--budget-s`, shared out between the paths. Bad input is one line and exit 2.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from pathlib import Path
from typing import Any

from pytest_fanout._argtypes import fraction, port_number
from pytest_fanout.artifacts import render_markdown, render_text, write_figure, write_text
from pytest_fanout.artifacts import write_json as write_json_file
from pytest_fanout.cli import CommandError, add_stack_group, spec_from
from pytest_fanout.exitcodes import ExitCode
from pytest_fanout.load import limits
from pytest_fanout.load.capacity import CapacityResult, SearchSettings, Slo, StepResult, search
from pytest_fanout.spec import SpecError, StackSpec, options_for

EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.FAILED
EXIT_USAGE = ExitCode.USAGE

#: Start-up and shut-down of one Locust step on top of its run time (about 1 s measured).
STEP_OVERHEAD_S = 2.0
MIN_STEP_S = 2
HOST_CHECK_TIMEOUT_S = 5.0
#: With --expect-workers: how long each step's master waits for its workers.
WORKERS_MAX_WAIT_S = 60
LOCUSTFILE = Path(__file__).with_name("capacity_locustfile.py")


def configure(parser: argparse.ArgumentParser) -> None:
    """The subcommand's arguments (called by `fanout`'s parser builder)."""
    slo = parser.add_argument_group("the SLO")
    slo.add_argument(
        "--slo-p95-ms",
        type=limits.latency_ms,
        required=True,
        help="p95 latency a rate must meet, from each request's intended start",
    )
    slo.add_argument(
        "--max-fail-ratio",
        type=fraction,
        default=0.01,
        help="failed requests a rate may have (default: 0.01)",
    )
    slo.add_argument(
        "--max-dropped-ratio",
        type=fraction,
        default=0.01,
        help="starts that found no free user in time (default: 0.01)",
    )
    search_group = parser.add_argument_group("the search")
    search_group.add_argument(
        "--budget-s",
        type=limits.duration_s,
        default=180.0,
        help="the whole search, all paths (default: 180)",
    )
    search_group.add_argument(
        "--step-s",
        type=limits.whole_seconds,
        default=5,
        help=f"run time of each step, >= {MIN_STEP_S} (default: 5)",
    )
    search_group.add_argument(
        "--start-rps", type=limits.rate_rps, default=5.0, help="the first rate tried (default: 5)"
    )
    search_group.add_argument(
        "--max-rps", type=limits.rate_rps, default=2000.0, help="never load faster (default: 2000)"
    )
    search_group.add_argument(
        "--precision",
        type=fraction,
        default=0.1,
        help="stop once the knee is known within this share (default: 0.1)",
    )
    search_group.add_argument(
        "--max-users",
        type=limits.users,
        default=1000,
        help="the most users (requests in flight) a step may have (default: 1000)",
    )
    search_group.add_argument(
        "--processes",
        type=limits.processes,
        default=None,
        help="Locust worker processes per step, on this machine (a distributed run)",
    )
    search_group.add_argument(
        "--expect-workers",
        type=limits.processes,
        default=None,
        help="each step runs Locust as a master and waits for this many workers, which may "
        "run on other hosts (see docs/load-testing.md)",
    )
    search_group.add_argument(
        "--master-bind-host",
        default="127.0.0.1",
        help="with --expect-workers: the address the master listens on (default: 127.0.0.1)",
    )
    search_group.add_argument(
        "--master-bind-port",
        type=port_number,
        default=5557,
        help="with --expect-workers: the master's port (default: 5557)",
    )
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
    target.add_argument(
        "--n",
        type=limits.calls,
        default=10,
        help="upstream calls per request of the default paths (default: 10)",
    )
    target.add_argument(
        "--max-concurrent",
        type=limits.calls,
        default=5,
        help="async_sem's bound in the default paths (default: 5)",
    )
    add_stack_group(parser, [k for k in options_for("fanout") if k != "request_timeout"])
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


def _usage(line: str) -> int:
    print(f"fanout capacity: error: {line} (see: fanout capacity --help)", file=sys.stderr)
    return EXIT_USAGE


def _paths(args: argparse.Namespace) -> list[str]:
    if args.paths:
        return list(args.paths)
    return [f"/sync/{args.n}", f"/async/{args.n}", f"/async_sem/{args.n}/{args.max_concurrent}"]


def pool_size(rate: float, slo_p95_ms: float, max_users: int) -> int:
    """Users for a step: twice the requests in flight at the SLO (Little's law), plus 10."""
    return min(max_users, math.ceil(2 * rate * slo_p95_ms / 1000) + 10)


def _step_function(args: argparse.Namespace, host: str, path: str):  # -> Callable
    from pytest_fanout.load.runner import LoadRunError, run_locust

    def step(rate: float) -> StepResult:
        users = pool_size(rate, args.slo_p95_ms, args.max_users)
        try:
            result = run_locust(
                host,
                users=users,
                spawn_rate=4 * users,  # the pool is up in a quarter second
                run_time_s=args.step_s,
                user_classes=["CapacityUser"],
                processes=args.processes,
                locustfile=LOCUSTFILE,
                extra_args=[
                    "--fanout-arrival-rate",
                    f"{rate:g}",
                    "--fanout-capacity-path",
                    path,
                    *_master_args(args),
                ],
                name=f"capacity {path} {rate:g}/s",
            )
        except LoadRunError as exc:
            raise _StepError(f"{path} at {rate:g}/s: {exc}") from None
        total, open_model = result.total, result.open_model
        measured = StepResult(
            rate=rate,
            achieved_rps=open_model.achieved_rps if open_model else 0.0,
            p95_ms=total.p95_ms,
            p99_ms=total.p99_ms,
            requests=total.requests,
            failures=total.failures,
            dropped_ratio=open_model.dropped_ratio if open_model else 0.0,
        )
        verdict = Slo(args.slo_p95_ms, args.max_fail_ratio, args.max_dropped_ratio)
        reason = verdict.broken_by(measured)
        print(
            f"  {path} at {rate:g}/s ({users} users): achieved {measured.achieved_rps:.1f}/s, "
            f"p95 {measured.p95_ms:.0f} ms, {measured.fail_ratio:.1%} failed, "
            f"{measured.dropped_ratio:.1%} dropped: {reason or 'meets the SLO'}",
            flush=True,
        )
        return measured

    return step


def _master_args(args: argparse.Namespace) -> list[str]:
    """With --expect-workers, each step's Locust is a master the workers connect to."""
    if not args.expect_workers:
        return []
    return [
        "--master",
        "--expect-workers",
        str(args.expect_workers),
        "--expect-workers-max-wait",
        str(WORKERS_MAX_WAIT_S),
        "--master-bind-host",
        args.master_bind_host,
        "--master-bind-port",
        str(args.master_bind_port),
    ]


class _StepError(Exception):
    """A step's Locust run gave no results."""


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
    if args.png and not _have_matplotlib():
        return _usage("--png needs matplotlib: pip install 'pytest-fanout[bench]'")
    if args.host:
        problem = _host_problem(args.host)
        if problem:
            print(f"fanout capacity: error: {problem}", file=sys.stderr)
            return ExitCode.TARGET_UNUSABLE
        return _search_all(args, args.host, paths)
    try:
        spec = spec_from(args)
        stack = spec.stack()
    except (CommandError, SpecError) as exc:
        return _usage(str(exc))
    args.spec = spec  # for the Markdown report's one line of what ran
    with stack:
        assert stack.app is not None
        print(
            f"fanout capacity: {spec.app} at {stack.app.url}, {len(stack.upstreams)} stub"
            f" upstream(s), delay {spec.delay_ms:g} ms",
            flush=True,
        )
        return _search_all(args, stack.app.url, paths)


def _host_problem(host: str) -> str:
    """Why --host cannot be loaded (one phrase), or "": any HTTP answer will do."""
    import httpx2

    if not host.startswith(("http://", "https://")):
        return f"--host {host!r} must start with http:// or https://"
    try:
        httpx2.get(host, timeout=HOST_CHECK_TIMEOUT_S)
    except httpx2.HTTPError as exc:
        return f"--host {host} does not answer: {type(exc).__name__}: {exc}"
    return ""


def _path_problem(host: str, path: str) -> str:
    """Why `path` cannot be searched (one phrase), or "": a client error (404, 405, 422...)
    to one GET will be the answer to every request of the search, so stop before it."""
    import httpx2

    if not path.startswith("/"):
        return f"--path {path!r} must start with '/'"
    try:
        answer = httpx2.get(host.rstrip("/") + path, timeout=HOST_CHECK_TIMEOUT_S)
    except httpx2.TimeoutException:
        return ""  # slow is for the search to measure, not a wrong path
    except httpx2.HTTPError as exc:
        return f"GET {path} at {host} failed: {type(exc).__name__}: {exc}"
    if 400 <= answer.status_code < 500 and answer.status_code != 429:
        return (
            f"GET {path} at {host} answers {answer.status_code} {answer.reason_phrase}: "
            "every request of the search would fail; check --path"
        )
    return ""


def _search_all(args: argparse.Namespace, host: str, paths: list[str]) -> int:
    import time

    slo = Slo(args.slo_p95_ms, args.max_fail_ratio, args.max_dropped_ratio)
    settings = SearchSettings(
        start_rps=args.start_rps,
        max_rps=args.max_rps,
        precision=args.precision,
        step_cost_s=args.step_s + STEP_OVERHEAD_S,
    )
    deadline = time.monotonic() + args.budget_s
    print(
        f"fanout capacity: SLO p95 <= {slo.p95_ms:g} ms, failures <= {slo.max_fail_ratio:g}, "
        f"dropped starts <= {slo.max_dropped_ratio:g}; {len(paths)} path(s) in "
        f"{args.budget_s:g} s, {args.step_s} s steps",
        flush=True,
    )
    for path in paths:
        problem = _path_problem(host, path)
        if problem:
            print(f"fanout capacity: error: {problem}", file=sys.stderr)
            return EXIT_FAILED
    results: list[CapacityResult] = []
    for index, path in enumerate(paths):
        share = (deadline - time.monotonic()) / (len(paths) - index)
        try:
            results.append(search(path, _step_function(args, host, path), slo, share, settings))
        except _StepError as exc:
            print(f"fanout capacity: error: {exc}".splitlines()[0], file=sys.stderr)
            return EXIT_FAILED
    print()
    print(capacity_table(results))
    if args.json:
        write_json(results, args.json)
        print(f"\nwrote {args.json}")
    if args.markdown:
        write_markdown(results, args, args.markdown)
        print(f"wrote {args.markdown}")
    if args.png:
        write_png(results, args.png)
        print(f"wrote {args.png}")
    return EXIT_OK


_HEADERS = ["path", "capacity (req/s)", "p95 there (ms)", "first failing (req/s)", "why"]


def capacity_table(results: list[CapacityResult]) -> str:
    """path, capacity (requests/s), p95 there, the first rate that failed, and why."""
    return render_text(_HEADERS, _rows(results))


def write_markdown(results: list[CapacityResult], args: argparse.Namespace, path: str) -> None:
    """The table as Markdown, under one line saying what was asked and where it ran."""
    machine = _machine()
    slo = Slo(args.slo_p95_ms, args.max_fail_ratio, args.max_dropped_ratio)
    spec: StackSpec | None = getattr(args, "spec", None)
    target_text = args.host or (
        f"{spec.app} with stub upstreams of {spec.delay_ms:g} ms" if spec else "the embedded stack"
    )
    lines = [
        f"SLO: p95 <= {slo.p95_ms:g} ms from the intended start, failures <= "
        f"{slo.max_fail_ratio:g}, dropped starts <= {slo.max_dropped_ratio:g}; "
        f"{args.step_s} s steps, budget {args.budget_s:g} s; {target_text}; "
        f"{machine['system']} {machine['machine']}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}.",
        "",
        render_markdown(_HEADERS, _rows(results)),
    ]
    write_text(path, "\n".join(lines) + "\n")


def _rows(results: list[CapacityResult]) -> list[list[object]]:
    rows: list[list[object]] = []
    for result in results:
        capacity, failure = result.capacity, result.first_failure
        why = failure.reason if failure else (result.stopped_early or "-")
        rows.append(
            [
                result.path,
                capacity.rate if capacity else None,
                capacity.p95_ms if capacity else None,
                failure.rate if failure else None,
                why,
            ]
        )
    return rows


def write_json(results: list[CapacityResult], path: str | Path) -> None:
    """One object per path; the machine it ran on goes with each (figures are per machine)."""
    machine = _machine()
    data = [{**result.to_dict(), "machine": machine} for result in results]
    write_json_file(path, data)


def _machine() -> dict[str, Any]:
    import os

    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_png(results: list[CapacityResult], path: str | Path) -> None:
    """p95 against arrival rate per path (log-log), the SLO as a line, each knee marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axes = plt.subplots(figsize=(8, 5))
    slo_ms = results[0].slo.p95_ms if results else None
    for result in results:
        steps = sorted(result.steps, key=lambda s: s.rate)
        if not steps:
            continue
        (line,) = axes.plot(
            [s.rate for s in steps],
            [max(s.p95_ms, 0.1) for s in steps],
            marker="o",
            label=result.path,
        )
        failed = [s for s in steps if not s.ok]
        axes.scatter(
            [s.rate for s in failed],
            [max(s.p95_ms, 0.1) for s in failed],
            marker="x",
            s=80,
            color=line.get_color(),
            zorder=3,
        )
        knee = result.capacity
        if knee is not None:
            axes.scatter(
                [knee.rate],
                [max(knee.p95_ms, 0.1)],
                s=160,
                facecolors="none",
                edgecolors=line.get_color(),
                linewidths=2,
                zorder=3,
            )
            axes.annotate(
                f"{knee.rate:g}/s",
                (knee.rate, max(knee.p95_ms, 0.1)),
                textcoords="offset points",
                xytext=(6, -14),
                color=line.get_color(),
            )
    if slo_ms is not None:
        axes.axhline(slo_ms, color="grey", linestyle="--", label=f"SLO p95 {slo_ms:g} ms")
    axes.set_xscale("log")
    axes.set_yscale("log")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(ticker.ScalarFormatter())
        axis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("arrival rate (requests/s)")
    axes.set_ylabel("p95 from the intended start (ms)")
    axes.set_title("p95 against arrival rate (circled: the capacity; x: broke the SLO)")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    try:
        write_figure(path, figure, dpi=100)
    finally:
        plt.close(figure)
