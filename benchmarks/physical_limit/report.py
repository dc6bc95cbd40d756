"""What the run writes: the machine it ran on, the Markdown table, the plot."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.physical_limit.plan import SEQUENTIAL_CAP
from benchmarks.physical_limit.rows import Row
from benchmarks.physical_limit.targets import Verdict
from pytest_fanout.artifacts import render_markdown

LIBRARIES = ("httpx2", "httpx", "aiohttp", "uvicorn", "uvloop")


def machine() -> dict[str, str]:
    """What the numbers came from: they are only comparable on the same machine."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = []
    for name in LIBRARIES:
        try:
            libs.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            libs.append(f"{name} (not installed)")
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": ", ".join(libs),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def _stub_line(stub: dict[str, object] | None) -> str:
    if stub is None:
        return "- Stub upstream throughput: not measured in this run (--skip-stub)"
    windows = ", ".join(f"{w:,.0f}" for w in stub["windows"])  # type: ignore[attr-defined]
    return (
        f"- Stub upstream at zero delay, a templated route, recording and the call log on, "
        f"pinned to one core, {stub['connections']} keep-alive "
        f"connections from {stub['load_processes']} load processes on the other core(s): "
        f"**{float(stub['req_per_cpu_s']):,.0f} requests per CPU-second** of the stub "  # type: ignore[arg-type]
        f"(median of {len(stub['windows'])} one-second windows; "  # type: ignore[arg-type]
        f"{float(stub['req_per_s']):,.0f} req/s by the clock, the stub busy "  # type: ignore[arg-type]
        f"{float(stub['busy']):.0%} of its core while other processes shared it; "  # type: ignore[arg-type]
        f"windows: {windows} req/s)"
    )


def markdown(
    rows: list[Row],
    stub: dict[str, object] | None,
    info: dict[str, str],
    checks: list[Verdict],
    load: tuple[str, str],
    runtime_s: float,
) -> str:
    """The committed table: machine, stub throughput, every row, then the ratios."""
    lines = [
        "# Fan-out at the physical limit",
        "",
        "Produced by `python -m benchmarks.physical_limit` (one run; do not edit by hand).",
        "",
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
        f"{info['platform']}",
        f"- Libraries: {info['libraries']}; the app and every async baseline run on uvloop",
        f"- Date: {info['date']}; load average before/after: {load[0]} / {load[1]} "
        f"(a shared, noisy machine); total runtime {runtime_s:.0f} s",
        _stub_line(stub),
        "",
        "Wall = median of the samples (min-max after it); ok = calls that succeeded in "
        "the worst sample; peak = most calls in flight at the upstream (its gauge, exact); "
        "ideal = delay x ceil(n / concurrency), efficiency = ideal / wall; CPU/call = the "
        "client's CPU time divided by its calls (the app process's CPU from /proc for "
        "`app` rows, the client process's own for raw rows). Sequential patterns stop at "
        f"n = {SEQUENTIAL_CAP} at 50 ms (n = 1000 would take 50 s by definition). At 0 ms "
        "the stub answers each call within one loop turn, so its peak in flight is 1.",
        "",
    ]
    headers = (
        "client", "pattern", "n", "delay", "wall (s)", "min-max (s)", "ok", "peak",
        "ideal (s)", "efficiency", "CPU/call (ms)", "samples",
    )  # fmt: skip
    table = []
    for row in sorted(rows, key=lambda r: (-r.delay_ms, r.client, r.pattern, r.n)):
        table.append(
            (
                row.client,
                row.pattern,
                row.n,
                f"{row.delay_ms:.0f} ms",
                f"{row.median_s:.3f}",
                f"{min(row.walls):.3f}-{max(row.walls):.3f}",
                f"{min(row.ok)}/{row.n}",
                max(row.peaks),
                f"{row.ideal_s:.3f}" if row.delay_ms > 0 else "-",
                f"{row.efficiency:.2f}" if row.efficiency is not None else "-",
                f"{row.cpu_per_call_ms:.3f}",
                len(row.walls),
            )
        )
    lines += [
        render_markdown(headers, table),
        "",
        "## The issue's targets, from this run",
        "",
        f"On {info['nproc']} CPUs, {info['cpu']}. Each ratio is of two rows measured above, "
        "side by side in this run.",
        "",
    ]
    met = {True: "yes", False: "**no**", None: "-"}
    checks_table = [(c.name, c.value, c.target, met[c.met]) for c in checks]
    lines += [render_markdown(("check", "measured", "target", "met"), checks_table)]
    lines += ["", "![wall time against n](benchmark.png)", ""]
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> bool:
    """Wall time against n, log-log, one line per client and pattern, one panel per delay."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return False
    delays = sorted({r.delay_ms for r in rows}, reverse=True)
    if not delays:
        return False
    fig, axes = plt.subplots(1, len(delays), figsize=(15, 6.5), sharey=True, squeeze=False)
    series: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        series.setdefault((row.client, row.pattern), []).append(row)
    colours = plt.get_cmap("tab20").colors
    for ax, delay in zip(axes[0], delays, strict=True):
        for index, ((client, pattern), group) in enumerate(sorted(series.items())):
            points = sorted((r.n, r.median_s) for r in group if r.delay_ms == delay)
            if not points:
                continue
            app = client.startswith("app")
            ax.plot(
                *zip(*points, strict=True),
                "-" if app else "--",
                marker="o" if app else "s",
                color=colours[index % len(colours)],
                label=f"{client}: {pattern}",
            )
        if delay > 0:
            ax.axhline(delay / 1000, color="grey", linewidth=0.8, linestyle=":")
            ax.text(
                min(r.n for r in rows), delay / 1000 * 1.05, "one upstream delay",
                fontsize=8, color="grey",
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (upstream calls per fan-out)")
        ax.set_title(f"upstream delay {delay:.0f} ms")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("wall time, median (s)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("Fan-out wall time: the app's routes vs raw aiohttp, httpx and httpx2")
    fig.tight_layout(rect=(0, 0.17, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
