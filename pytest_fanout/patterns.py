"""The main job: the three fan-out patterns (and the anti-pattern) side by side.

`fanout patterns` starts the embedded stack, measures each pattern at the
same width against the same upstream delay, and prints one table: wall time,
speedup over sync, peak in flight at the upstream, loop lag, efficiency.
An efficiency measured while the route blocked the app's event loop is marked
(`efficiency_cell`): the number alone would look healthy.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from pytest_fanout._table import render_text
from pytest_fanout.diagnosis import diagnose, headline
from pytest_fanout.measure import measure
from pytest_fanout.measurement import Measurement, Request
from pytest_fanout.servers.stack import DEFAULT_APP, DEFAULT_UPSTREAM, Stack
from pytest_fanout.servers.upstream import Behaviour

#: The loop counts as blocked when its worst stall is this share of the request's time.
BLOCKED_SHARE = 0.5
#: ... and at least this long (a scheduler hiccup on a busy machine is not a block).
BLOCKED_MIN_S = 0.02
BLOCKED_MARK = " (loop blocked)"


def blocks_loop(m: Measurement) -> bool:
    """True when the app's own code held its event loop for most of the request (garbage
    collection and waits for a CPU not counted): a blocking route."""
    lag = m.blocking_lag_s
    return lag >= BLOCKED_MIN_S and lag >= BLOCKED_SHARE * m.median_s


def efficiency_cell(m: Measurement) -> str:
    """The efficiency as a table shows it: "-" when the ideal is unknown, marked when the
    route blocked the loop (its wall time is fine only because nothing else ran)."""
    if m.efficiency is None:
        return "-"
    return f"{m.efficiency:.2f}" + (BLOCKED_MARK if blocks_loop(m) else "")


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
        httpx2.Client(timeout=120) as client,
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


def _upstream_rows(m: Measurement) -> list[tuple[str, int, str, int]]:
    """(name, requests, peak in flight, new connections) per upstream, the first first."""
    rows = []
    for name in m.upstream_names:
        gauges = m.upstream(name)
        label = "upstream" if name == DEFAULT_UPSTREAM else name
        rows.append((label, gauges.requests, gauges.peak_label, gauges.connections_opened))
    return rows


def measurement_report(m: Measurement, *, method: str, app: str, delay_ms: float) -> str:
    """`fanout measure`'s answer: timings, what each upstream saw, loop lag, efficiency."""
    lines = [
        f"{method} {m.path} on {app} (stub upstream delay {delay_ms:g} ms,"
        f" {len(m.samples)} samples after a warm-up)",
        f"  median            {m.median_s * 1000:.1f} ms",
        f"  p95               {m.p95_s * 1000:.1f} ms",
    ]
    if m.first_byte_median_s is not None:
        lines.append(f"  first byte        {m.first_byte_median_s * 1000:.1f} ms (median)")
    upstreams = _upstream_rows(m)
    for name, requests, peak, connections in upstreams:
        lines.append(
            f"  {name:<17} requests {requests}, peak in flight {peak},"
            f" new connections {connections}"
        )
    if m.structure:
        waves = ", ".join(f"{name} {waves}" for name, waves in m.structure.items())
        lines.append(f"  held waves        {waves} (the structure, exact)")
    if len(upstreams) > 1:
        lines.append(
            f"  new connections   {m.connections_opened} (all upstreams, the most in one sample)"
        )
    lines.append(f"  loop lag          {m.loop_lag_max_s * 1000:.1f} ms (worst stall)")
    if m.ideal_s is not None:
        lines.append(
            f"  efficiency        {efficiency_cell(m)}; ideal {m.ideal_s * 1000:.0f} ms"
            f" (n={m.n}, concurrency {m.concurrency})"
        )
    elif m.upstream_delay_s == 0 and m.ideal_given_s is None:
        lines.append("  efficiency        - (delay 0: no ideal time to compare with)")
    else:
        lines.append("  efficiency        - (give --n and --concurrency for the ideal time)")
    if m.app_errors:
        lines.append(
            f"  errors            {m.app_errors} upstream calls failed (the app's 'errors')"
        )
    lines.extend(_finding_lines(m))
    return "\n".join(lines)


def _finding_lines(m: Measurement) -> list[str]:
    """`fanout measure`'s findings (`diagnose`), the most important first."""
    findings = diagnose(m)
    if not findings:
        return ["  finding           - (nothing wrong found)"]
    return [f"  finding           {f.message}" for f in findings]
