"""What the blocking-stack sampler costs a healthy app: CPU per request, sampler on vs off.

    python benchmarks/probe_cost.py                 # ~1 minute, from the repository root
    python benchmarks/probe_cost.py --rounds 1 --repeat 2    # a smoke run

Two stacks run side by side, the same reference app under the loop probe:
one with the stack sampler on (the default), one with PYTEST_FANOUT_STACKS=0.
Rounds alternate between them (on, off, off, on, ...), so a machine that
gets busier or quieter during the run weighs on both alike. Each round takes
`--repeat` samples of /async/N and keeps the app process's CPU per request,
all threads, the probe's own included (`app_cpu_per_sample` plus
`probe_cpu_per_sample`: the gate's figure leaves the sampler's thread out, so
it cannot weigh it). The figure is the ratio of the medians over all samples;
the target is within 3% (while the loop is healthy the sampler's thread wakes
about every 20 ms to read the loop thread's scheduler times). Every child
process is ended on exit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx2  # noqa: E402

from pytest_fanout.artifacts import render_text  # noqa: E402
from pytest_fanout.limits import (  # noqa: E402
    DEFAULT_APP,
    Behaviour,
    non_negative_float,
    positive_int,
)
from pytest_fanout.measure import measure  # noqa: E402
from pytest_fanout.measurement import Request  # noqa: E402
from pytest_fanout.servers.stack import Stack  # noqa: E402

TARGET = 0.03
MODES = {"sampler on": {}, "sampler off": {"PYTEST_FANOUT_STACKS": "0"}}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=positive_int, default=100, help="calls per request")
    parser.add_argument(
        "--delay-ms",
        type=non_negative_float,
        default=50.0,
        help="the stub upstream's delay (default: 50)",
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=10, help="rounds per mode, alternating (default: 10)"
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=10, help="requests per round (default: 10)"
    )
    return parser.parse_args(argv)


def run(n: int, delay_ms: float, rounds: int, repeat: int) -> dict[str, list[float]]:
    """CPU seconds per request, every sample, per mode."""
    path = f"/async/{n}"
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    stacks = {
        mode: Stack(DEFAULT_APP, behaviour=Behaviour(delay_ms=delay_ms), app_env=env, app_dir=REPO)
        for mode, env in MODES.items()
    }
    try:
        for stack in stacks.values():
            stack.start()
        with httpx2.Client(timeout=60) as client:
            order = list(MODES)
            for index in range(rounds):
                # on, off, off, on, on, off...: neither mode always goes first.
                for mode in order if index % 2 == 0 else order[::-1]:
                    stack = stacks[mode]
                    assert stack.app is not None
                    m = measure(
                        client,
                        stack.app.url,
                        Request(path),
                        upstreams=stack.upstreams,
                        app=stack.app,
                        repeat=repeat,
                        warmup=1,
                    )
                    if m.upstream_requests != n:
                        raise SystemExit(
                            f"{mode}: the upstream saw {m.upstream_requests} calls, expected {n}"
                        )
                    process = zip(m.app_cpu_per_sample, m.probe_cpu_per_sample, strict=True)
                    cpu[mode].extend(app + probe for app, probe in process)
    finally:
        for stack in stacks.values():
            stack.stop()
    return cpu


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    print(
        f"App CPU per request on /async/{args.n} (upstream delay {args.delay_ms:g} ms), "
        f"{args.rounds} alternating rounds x {args.repeat} requests per mode:\n",
        flush=True,
    )
    cpu = run(args.n, args.delay_ms, args.rounds, args.repeat)
    rows = []
    for mode, values in cpu.items():
        rows.append(
            [
                mode,
                len(values),
                f"{statistics.median(values) * 1000:.3f} ms",
                f"{min(values) * 1000:.3f} ms",
                f"{max(values) * 1000:.3f} ms",
            ]
        )
    print(render_text(["mode", "requests", "median CPU", "min", "max"], rows))
    ratio = statistics.median(cpu["sampler on"]) / statistics.median(cpu["sampler off"])
    verdict = "within" if abs(ratio - 1) <= TARGET else "OUTSIDE"
    print(f"\nsampler on / off: {ratio:.3f} ({verdict} the {TARGET:.0%} target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
