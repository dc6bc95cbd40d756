"""What the held probe costs: one request of a gather of 1000 with the stub holding its calls.

    python benchmarks/hold_probe.py                      # ~30 s, from the repository root
    python benchmarks/hold_probe.py --n 50 --repeat 2    # a smoke run

The reference app's /async/N under the harness, its stub at `--delay-ms`.
Each round sends one plain request (timed at the configured delay) and one
held probe (the stub holds every call until the app sends no more, then
answers the wave), and keeps the probe's wall time, its waves and the quiet
window that closed the last wave. The target (issue 22): every probe finishes
within the configured delay + that quiet window + 1 s, and its waves are [N].
Every child process is ended on exit; exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx2  # noqa: E402

from pytest_fanout.artifacts import render_text  # noqa: E402
from pytest_fanout.limits import Behaviour, non_negative_float, positive_int  # noqa: E402
from pytest_fanout.servers.stack import Stack  # noqa: E402

#: Seconds a probe may take beyond the delay and the quiet window (issue 22).
SLACK_S = 1.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=positive_int, default=1000, help="calls per request")
    parser.add_argument(
        "--delay-ms", type=non_negative_float, default=100.0, help="the stub's delay (100)"
    )
    parser.add_argument("--repeat", type=positive_int, default=10, help="rounds (default: 10)")
    return parser.parse_args(argv)


def run(n: int, delay_ms: float, repeat: int) -> list[dict[str, object]]:
    """One row per round: plain and held wall times, waves, quiet window, target."""
    path = f"/async/{n}"
    rows = []
    with (
        Stack(behaviour=Behaviour(delay_ms=delay_ms)) as stack,
        httpx2.Client(timeout=120) as client,
    ):
        assert stack.app is not None
        url = stack.app.url + path
        client.get(url).raise_for_status()  # warm-up: the pool's connections
        for _ in range(repeat):
            start = time.perf_counter()
            client.get(url).raise_for_status()
            plain_s = time.perf_counter() - start
            start = time.perf_counter()
            with stack.upstream.hold(app_pid=stack.app.pid) as held:
                client.get(url).raise_for_status()
            held_s = time.perf_counter() - start
            target_s = delay_ms / 1000 + held.last_quiet_ms / 1000 + SLACK_S
            rows.append(
                {
                    "plain_s": plain_s,
                    "held_s": held_s,
                    "waves": held.waves,
                    "quiet_ms": held.last_quiet_ms,
                    "target_s": target_s,
                    "ok": held_s <= target_s and held.waves == [n],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    rows = run(args.n, args.delay_ms, args.repeat)
    table = [
        [
            i + 1,
            f"{r['plain_s'] * 1000:.0f} ms",
            f"{r['held_s'] * 1000:.0f} ms",
            r["waves"] if len(str(r["waves"])) < 30 else f"{len(r['waves'])} waves",
            f"{r['quiet_ms']:.0f} ms",
            f"{r['target_s'] * 1000:.0f} ms",
            "ok" if r["ok"] else "MISSED",
        ]
        for i, r in enumerate(rows)
    ]
    headers = ["round", "plain request", "held probe", "waves", "quiet window", "target", ""]
    print(f"/async/{args.n}, stub delay {args.delay_ms:g} ms, {args.repeat} rounds")
    print(render_text(headers, table))
    held = [float(r["held_s"]) for r in rows]  # type: ignore[arg-type]
    print(
        f"held probe: median {statistics.median(held) * 1000:.0f} ms, "
        f"max {max(held) * 1000:.0f} ms; target: delay + quiet window + {SLACK_S:g} s"
    )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
