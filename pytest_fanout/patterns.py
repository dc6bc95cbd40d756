"""The main job: the three fan-out patterns (and the anti-pattern) side by side.

`fanout patterns` starts the embedded stack, measures each pattern at the
same width against the same upstream delay, and prints one table: wall time,
speedup over sync, peak in flight at the upstream, loop lag, efficiency.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from pytest_fanout._table import render_text
from pytest_fanout.measure import Measurement, measure
from pytest_fanout.servers.stack import Stack
from pytest_fanout.servers.upstream import Behaviour


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
    app: str = "app.main:app",
    blocking: bool = True,
) -> list[PatternRow]:
    """Start a stack, measure every pattern, stop the stack."""
    rows = []
    with (
        Stack(app, behaviour=Behaviour(delay_ms=delay_ms)) as stack,
        httpx2.Client(timeout=120) as client,
    ):
        assert stack.app is not None
        for pattern, path, concurrency in pattern_paths(n, max_concurrent, blocking):
            m = measure(
                client,
                stack.app.url,
                path,
                upstream=stack.upstream,
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
                m.upstream_peak_inflight,
                f"{m.loop_lag_max_s * 1000:.0f} ms",
                f"{m.efficiency:.2f}" if m.efficiency is not None else "-",
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
    ]
    return render_text(headers, table)
