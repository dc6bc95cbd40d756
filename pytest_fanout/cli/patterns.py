"""`fanout patterns`, the main job: the three fan-out patterns (and the anti-pattern) side
by side.

It starts the embedded stack, measures each pattern at the
same width against the same upstream delay, and prints one table: wall time,
speedup over sync, peak in flight at the upstream, loop lag, efficiency.
An efficiency measured while the route blocked the app's event loop is marked
(`diagnose.efficiency_cell`): the number alone would look healthy.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import httpx2

from pytest_fanout.artifacts import render_text
from pytest_fanout.cli import CommandError, add_stack_group, spec_from
from pytest_fanout.diagnosis import efficiency_cell, headline
from pytest_fanout.limits import DEFAULT_APP, Behaviour, ExitCode, import_string
from pytest_fanout.measure import MeasureClient, measure
from pytest_fanout.measurement import Measurement, Request
from pytest_fanout.servers.stack import Stack
from pytest_fanout.spec import add_options


@dataclass
class PatternRow:
    pattern: str
    measurement: Measurement


def pattern_paths(n: int, max_concurrent: int, blocking: bool = True) -> list[tuple[str, str, int]]:
    """(pattern, path, calls at once) for each route of the reference app measured."""
    paths = [
        ("sync", f"/sync/{n}", 1),
        ("async", f"/async/{n}", n),
        ("async_sem", f"/async_sem/{n}/{max_concurrent}", min(n, max_concurrent)),
    ]
    if blocking:
        paths.append(("blocking (anti-pattern)", f"/blocking/{n}", 1))
    return paths


def run_patterns(
    *,
    n: int = 20,
    max_concurrent: int = 5,
    delay_ms: float = 100.0,
    repeat: int = 3,
    app: str = DEFAULT_APP,
    blocking: bool = True,
) -> list[PatternRow]:
    """Start a stack, measure every pattern, stop the stack."""
    rows = []
    with (
        Stack(app, behaviour=Behaviour(delay_ms=delay_ms)) as stack,
        MeasureClient(timeout=120) as client,
    ):
        assert stack.app is not None
        for pattern, path, concurrency in pattern_paths(n, max_concurrent, blocking):
            m = measure(
                client,
                stack.app.url,
                Request(path),
                upstreams=stack.upstreams,
                app=stack.app,
                repeat=repeat,
                warmup=1,
                n=n,
                concurrency=concurrency,
            )
            rows.append(PatternRow(pattern, m))
    return rows


def patterns_table(rows: list[PatternRow]) -> str:
    sync = next((r.measurement for r in rows if r.pattern == "sync"), None)
    table = []
    for row in rows:
        m = row.measurement
        speedup = sync.median_s / m.median_s if sync else None
        table.append(
            [
                row.pattern,
                m.path,
                m.n,
                f"{m.median_s * 1000:.0f} ms",
                f"{speedup:.1f}x" if speedup else "-",
                m.upstream().peak_label if m.upstream_names else m.upstream_peak_inflight,
                f"{m.loop_lag_max_s * 1000:.0f} ms",
                efficiency_cell(m),
                headline(m),
            ]
        )
    headers = [
        "pattern",
        "path",
        "n",
        "wall time",
        "speedup over sync",
        "peak in flight",
        "loop lag",
        "efficiency",
        "finding",
    ]
    return render_text(headers, table)


def configure(parser: argparse.ArgumentParser) -> None:
    # --n and --max-concurrent are Locust's --fanout-n and --fanout-max-concurrent.
    add_options(
        parser.add_argument,
        prefix="",
        front_end="fanout",
        group="load",
        keys=["n", "max_concurrent"],
        defaults={"n": 20},
    )
    add_stack_group(parser, ["config", "delay_ms"])
    add_options(parser.add_argument, prefix="", keys=["repeat"], defaults={"repeat": 3})
    parser.add_argument(
        "--app",
        type=import_string,
        default=DEFAULT_APP,
        help=f"import string of the app (default: {DEFAULT_APP}); it must"
        " serve the reference routes (use `fanout measure` for your own)",
    )
    parser.add_argument(
        "--no-blocking", action="store_true", help="leave out the blocking anti-pattern"
    )


def run(args: argparse.Namespace) -> int:
    from pytest_fanout.measurement import MeasurementError

    n, max_concurrent = args.fanout_calls, args.fanout_semaphore
    # The patterns are the reference app's routes: only the delay comes from [tool.fanout].
    delay_ms = spec_from(args).delay_ms
    try:
        rows = run_patterns(
            n=n,
            max_concurrent=max_concurrent,
            delay_ms=delay_ms,
            repeat=args.fanout_repeat,
            app=args.app,
            blocking=not args.no_blocking,
        )
    except MeasurementError as exc:  # e.g. a 422: --n or --max-concurrent over the app's cap
        raise CommandError(str(exc).splitlines()[0]) from None
    except httpx2.HTTPError as exc:
        raise CommandError(f"the app did not answer: {type(exc).__name__}: {exc}") from None
    # Printed once there is a table to show: a stack that did not start prints one line.
    print(
        f"Fan-out of n={n} calls to a stub upstream answering after {delay_ms:g} ms"
        f" (median of {args.fanout_repeat}):\n"
    )
    print(patterns_table(rows), flush=True)
    return ExitCode.OK
