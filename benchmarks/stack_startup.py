"""How long the whole stack takes to come up: both processes spawned AND answering.

    python benchmarks/stack_startup.py [runs]

Prints each run and the median; the README quotes it (target: under 3 s).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_fanout.servers.stack import Stack  # noqa: E402


def main(runs: int = 5) -> None:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with Stack() as stack:
            assert stack.app is not None
            stack.app.probe_stats()
            stack.upstream.stats()
            times.append(time.perf_counter() - start)
    print("start-up (s):", " ".join(f"{t:.2f}" for t in times))
    print(f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {runs} runs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
