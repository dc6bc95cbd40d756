"""What a rate limit costs the stub: requests per CPU-second with and without one.

    .venv/bin/python benchmarks/bucket_cost.py [--rounds 2] [--windows 3]

Two stubs loaded the same way as `benchmarks/stub_throughput.py` (zero delay, pinned to
one core, keep-alive load from raw-protocol processes on the other): one without a
limit, one with `rate_limit = "1000000/s"` and a burst as large, which never rejects,
so every call pays the bucket (a token taken, O(1)) and nothing else differs. Run in
turns (bare, limited, bare, limited...) so a noisy shared machine weighs on both
alike; prints each one's median requests per CPU-second and their ratio. The target
(issue 33): the bucket costs at most 5% of the stub's throughput.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.physical_limit import stub_load  # noqa: E402
from pytest_fanout.limits import MAX_BURST, Behaviour, int_between  # noqa: E402
from pytest_fanout.servers.stack import StubUpstreamServer  # noqa: E402

#: The most throughput the bucket may cost.
TARGET_COST = 0.05
#: A limit no load on one machine reaches: every call takes a token, none is refused.
NEVER_REJECTS = "1000000/s"


def measure(limited: bool) -> float:
    """One stub's requests per CPU-second (median of its windows); none may be refused."""
    extra = {"rate_limit": NEVER_REJECTS, "burst": MAX_BURST} if limited else {}
    behaviour = Behaviour(delay_ms=0, record_requests=0, **extra)
    with StubUpstreamServer(behaviour) as stub:
        result = stub_load.stub_throughput(stub)
        rejected = stub.stats()["rejected"]
    if rejected:
        raise SystemExit(f"the limit refused {rejected} calls: it must never reject here")
    return float(result["req_per_cpu_s"])  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int_between(1, 20), default=2, help="turns of each (default: 2)"
    )
    parser.add_argument(
        "--windows",
        type=int_between(1, 60),
        default=3,
        help="one-second windows per stub and turn (default: %(default)s)",
    )
    args = parser.parse_args()
    stub_load.STUB_WINDOWS = args.windows
    bare: list[float] = []
    limited: list[float] = []
    for _ in range(args.rounds):
        bare.append(measure(limited=False))
        limited.append(measure(limited=True))
    without, with_limit = statistics.median(bare), statistics.median(limited)
    cost = 1 - with_limit / without
    print(f"{'no rate limit':28} {without:>9,.0f} requests per CPU-second  {bare}")
    print(
        f"{'rate_limit ' + NEVER_REJECTS:28} {with_limit:>9,.0f} requests per CPU-second  {limited}"
    )
    met = cost <= TARGET_COST
    print(
        f"the bucket costs {cost:+.1%} of the stub's throughput (target <= "
        f"{TARGET_COST:.0%}): {'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
