"""The stub upstream's throughput with 20 routes and recording on, next to a bare stub.

    .venv/bin/python benchmarks/stub_throughput.py [--windows 5]

Two stubs in one run, each loaded the same way as in `make bench` (zero delay,
pinned to one core, keep-alive connections from raw-protocol load processes on
the other core): a bare one (no routes, recording off) and one with 20 routes
(the GET that the load sends matches the last, templated one, after 19 that do
not) and every request recorded (the default 10,000 kept). Prints requests per
CPU-second of each stub, then the fastest raw client's calls per second on a
zero-delay stub in the same run (raw aiohttp with `limit=1000`, as `make bench`
finds it, at n = 100 and 1000) and the ratio: `[MET]` at 2x or more (issue 35),
the exit status 0 then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.physical_limit import stub_load  # noqa: E402
from benchmarks.physical_limit.plan import REPEATS  # noqa: E402
from benchmarks.physical_limit.raw_clients import measure_raw  # noqa: E402
from benchmarks.physical_limit.targets import STUB_OVER_CLIENT  # noqa: E402
from pytest_fanout.limits import Behaviour  # noqa: E402
from pytest_fanout.servers.stack import StubUpstreamServer  # noqa: E402

TARGET_PER_CPU_S = 20_000
ROUTES = 20


def add_routes(stub: StubUpstreamServer) -> None:
    """19 routes the load never matches, then the one it does (a template, json substituted)."""
    for i in range(ROUTES - 1):
        method = "POST" if i % 2 else "GET"
        stub.route(method, f"/other{i}/{{id}}", json={"id": "{id}", "route": i})
    stub.route("GET", "/items/{item}", json={"item": "{item}", "available": 3})


def measure(routed: bool) -> dict[str, object]:
    behaviour = Behaviour(delay_ms=0, record_requests=10_000 if routed else 0)
    with StubUpstreamServer(behaviour) as stub:
        if routed:
            add_routes(stub)
        result = stub_load.stub_throughput(stub)
        stats = stub.stats()
        if routed:
            kept = len(stub.requests(path="/items/1")[-5:])
            result["recorded_tail"] = kept
        result["completed"] = stats["completed"]
    return result


def fastest_client() -> tuple[str, float]:
    """(the row's name, its calls per second): raw aiohttp with limit=1000 on a zero-delay
    stub, the fastest client of `make bench` (a sustained rate: n >= 100)."""
    with StubUpstreamServer(Behaviour(delay_ms=0)) as stub:
        rows = measure_raw(stub, "aiohttp-pool", ns=(100, 1000), repeats=REPEATS)
    best = max((r for r in rows if min(r.ok) == r.n), key=lambda r: r.calls_per_s)
    return f"{best.client}, n={best.n}", best.calls_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--windows",
        type=int,
        default=stub_load.STUB_WINDOWS,
        help="one-second windows per stub (default: %(default)s)",
    )
    args = parser.parse_args()
    stub_load.STUB_WINDOWS = max(1, args.windows)
    bare = measure(routed=False)
    routed = measure(routed=True)
    for label, result in (
        ("bare stub (no routes, recording off)", bare),
        (f"{ROUTES} routes + recording on", routed),
    ):
        print(
            f"{label:40} {float(result['req_per_cpu_s']):>9,.0f} requests per CPU-second "
            f"({float(result['req_per_s']):,.0f} req/s by the clock, "
            f"busy {float(result['busy']):.0%})"
        )
    rate = float(routed["req_per_cpu_s"])  # type: ignore[arg-type]
    floor = rate >= TARGET_PER_CPU_S
    share = rate / float(bare["req_per_cpu_s"])  # type: ignore[arg-type]
    print(
        f"[{'MET' if floor else 'MISS'}] >= {TARGET_PER_CPU_S:,} per CPU-second with routes "
        f"and recording ({share:.2f}x the bare stub)"
    )
    name, client_rate = fastest_client()
    met = rate >= STUB_OVER_CLIENT * client_rate
    print(
        f"[{'MET' if met else 'MISS'}] stub / fastest client >= {STUB_OVER_CLIENT:g}x: "
        f"{rate / client_rate:.2f}x ({rate:,.0f} per CPU-second / {client_rate:,.0f} calls/s, "
        f"{name})"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
