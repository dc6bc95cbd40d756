"""The whole benchmark and its command line (`python -m benchmarks.physical_limit --help`)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.settings import Settings
from benchmarks.physical_limit.app_rows import measure_app
from benchmarks.physical_limit.guards import guard_costs
from benchmarks.physical_limit.plan import APP_TRANSPORTS, DELAYS_MS, DOCS, NS, RAW_CLIENTS, REPEATS
from benchmarks.physical_limit.raw_clients import measure_raw
from benchmarks.physical_limit.report import machine, markdown, plot
from benchmarks.physical_limit.rows import Row
from benchmarks.physical_limit.stub_load import stub_costs, stub_throughput
from benchmarks.physical_limit.targets import verdicts
from pytest_fanout.limits import Behaviour, non_negative_float, positive_int
from pytest_fanout.servers.stack import StubUpstreamServer


@dataclass(frozen=True)
class Plan:
    """One run's choices; the defaults are the full benchmark."""

    ns: tuple[int, ...] = NS
    delays_ms: tuple[float, ...] = DELAYS_MS
    repeats: int = REPEATS
    transports: tuple[str, ...] = APP_TRANSPORTS
    clients: tuple[str, ...] = tuple(RAW_CLIENTS)
    stub: bool = True


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _installed(kind: str) -> bool:
    library = "aiohttp" if kind.startswith("aiohttp") else kind.split("-")[0]
    if importlib.util.find_spec(library) is None:
        print(f"{library} is not installed: no {kind} rows (pip install -e '.[test]')")
        return False
    return True


def run(plan: Plan, out_dir: Path, json_path: Path | None) -> int:
    """Measure, write the table and the plot, print the targets; returns 0 (they are reported)."""
    started = time.perf_counter()
    load_before = _load()
    info = machine()
    default = Settings().transport
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}")
    rows: list[Row] = []
    stub: dict[str, object] | None = None
    upstream = StubUpstreamServer(Behaviour(delay_ms=plan.delays_ms[0]))
    try:
        upstream.start()
        if plan.stub:
            stub = stub_throughput(upstream)
            print(
                f"stub upstream, zero delay, one core, a route, recording and the call log "
                f"on: {stub['req_per_cpu_s']:,.0f} req per CPU-second ({stub['req_per_s']:,.0f} "
                f"req/s by the clock, busy {stub['busy']:.0%})"
            )
            stub["costs"] = costs = stub_costs()
            each = ", ".join(
                f"{k if k == 'all on' else k + ' off'} {v:.1f} us" for k, v in costs.items()
            )
            print(f"stub's own code per call: {each}")
        for transport in sorted(plan.transports, key=lambda t: t != default):
            print(f"app on {transport}:")
            rows += measure_app(
                upstream,
                transport,
                default,
                ns=plan.ns,
                delays_ms=plan.delays_ms,
                repeats=plan.repeats,
            )
        kinds = [kind for kind in plan.clients if _installed(kind)]
        for delay_ms in plan.delays_ms:
            upstream.configure(delay_ms=delay_ms)
            print(f"raw clients at {delay_ms:.0f} ms:")
            for kind in kinds:
                rows += measure_raw(upstream, kind, ns=plan.ns, repeats=plan.repeats)
    finally:
        upstream.stop()
    runtime = time.perf_counter() - started
    load_after = _load()
    guards = guard_costs()
    checks = verdicts(rows, stub, default, guards)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "benchmark.md"
    table.write_text(markdown(rows, stub, info, checks, (load_before, load_after), runtime) + "\n")
    plotted = plot(rows, out_dir / "benchmark.png")
    if json_path is not None:
        document = {
            "machine": info,
            "stub": stub,
            "guards": guards,
            "rows": [r.to_dict() for r in rows],
        }
        json_path.write_text(json.dumps(document, indent=1))
    print(f"\nwrote {table}" + (f" and {out_dir / 'benchmark.png'}" if plotted else ""))
    print(f"runtime {runtime:.0f} s; load average before {load_before}, after {load_after}")
    print(f"\nthe issue's targets, from this run on {info['nproc']} CPUs, {info['cpu']}:")
    for check in checks:
        mark = "INFO" if check.met is None else "MET " if check.met else "MISS"
        print(f"  [{mark}] {check.name}: {check.value} (target {check.target})")
    return 0


def _listed(item: Callable[[str], object], choices: Sequence[str] = ()) -> Callable[[str], tuple]:
    """argparse type: a comma-separated list, each item checked by `item` (and `choices`)."""

    def parse(text: str) -> tuple:
        values = tuple(item(part.strip()) for part in text.split(",") if part.strip())
        unknown = [v for v in values if choices and v not in choices]
        if not values or unknown:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a comma-separated list of {', '.join(choices) or 'values'}"
            )
        return values

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.physical_limit",
        description="Fan-out at the physical limit: the app next to raw aiohttp, httpx, httpx2.",
    )
    defaults = Plan()
    parser.add_argument(
        "--repeats", type=positive_int, default=defaults.repeats, help="samples per fast row"
    )
    parser.add_argument(
        "--ns", type=_listed(positive_int), default=defaults.ns, help="fan-out widths, 10,100,1000"
    )
    parser.add_argument(
        "--delays-ms",
        type=_listed(non_negative_float),
        default=defaults.delays_ms,
        help="upstream delays, 50,0",
    )
    parser.add_argument(
        "--transports",
        type=_listed(str, APP_TRANSPORTS),
        default=defaults.transports,
        help=f"the app's engines, {','.join(APP_TRANSPORTS)}",
    )
    parser.add_argument(
        "--clients",
        type=_listed(str, tuple(RAW_CLIENTS)),
        default=defaults.clients,
        help=f"raw baselines, from {','.join(RAW_CLIENTS)}",
    )
    parser.add_argument("--skip-stub", action="store_true", help="skip the stub's throughput")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the .md and .png go")
    parser.add_argument("--json", type=Path, default=None, help="also save every sample")
    args = parser.parse_args(argv)
    if max(args.ns) > Settings().max_n:
        parser.error(f"argument --ns: at most {Settings().max_n} (FANOUT_MAX_N)")
    plan = Plan(
        ns=args.ns,
        delays_ms=args.delays_ms,
        repeats=args.repeats,
        transports=args.transports,
        clients=args.clients,
        stub=not args.skip_stub,
    )
    return run(plan, args.out, args.json)


if __name__ == "__main__":
    sys.exit(main())
