"""How long the whole stack takes to come up: every process spawned AND answering.

    python benchmarks/stack_startup.py [runs] [--upstreams N]

Prints each run and the median; docs/testing-concurrency.md quotes it (target: under 3 s with
one upstream, well under 2 s with three named upstreams, which start in parallel).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_fanout.servers.stack import Stack  # noqa: E402


def main(runs: int = 5, upstreams: int = 1) -> None:
    names = {f"up{i}": f"UP{i}_URL" for i in range(upstreams)} if upstreams > 1 else None
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with Stack(upstreams=names) as stack:
            assert stack.app is not None
            stack.app.probe_stats()
            for upstream in stack.upstreams.values():
                upstream.stats()
            times.append(time.perf_counter() - start)
    print(f"start-up with {upstreams} upstream(s) (s):", " ".join(f"{t:.2f}" for t in times))
    print(f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {runs} runs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=5)
    parser.add_argument("--upstreams", type=int, default=1)
    args = parser.parse_args()
    main(args.runs, args.upstreams)
