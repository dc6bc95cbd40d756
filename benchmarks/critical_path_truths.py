"""Do the critical path's 95% intervals contain the known truths (issue 31 item 1)?

    python benchmarks/critical_path_truths.py [--runs 20] [--only NAME] [--markdown FILE]
    python -m tests.under_load -- python benchmarks/critical_path_truths.py --runs 20

Three services whose weights are known exactly:
- `slack`: tests/e2e/timeline_app GET /summary/u1: auth, then inventory 40 ms beside
  reviews 15 ms, then pricing: weights 1, 1, 0 (reviews: 25 ms of slack), 1;
- `semaphore`: the reference app's /async_sem/30/5 (30 calls behind Semaphore(5), 20 ms):
  weight 6 (six rounds);
- `gather`: the reference app's /async/20 (20 calls at once, 20 ms): weight 1.

Each run measures every weight once (`fanout.critical_path`); the summary counts the runs
whose interval contains the truth (the target: 19 of 20), the slack found for reviews,
whether a "saves" figure was shown for it (it must not), and the time the experiment took
as a multiple of the endpoint's latency (the target: at most 30x).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_fanout.fixture import Fanout  # noqa: E402
from pytest_fanout.limits import Behaviour  # noqa: E402
from pytest_fanout.servers.stack import Stack  # noqa: E402
from tests.e2e.timeline_app.stubs import (  # noqa: E402
    SUMMARY_DELAYS,
    SUMMARY_SLACK_MS,
    SUMMARY_WEIGHTS,
    UPSTREAMS,
    install,
)

#: {service: (path, {upstream: true weight})}.
SERVICES = {
    "slack": ("/summary/u1", SUMMARY_WEIGHTS),
    "semaphore": ("/async_sem/30/5", {"default": 6.0}),
    "gather": ("/async/20", {"default": 1.0}),
}


@contextmanager
def service(name: str) -> Iterator[Fanout]:
    """A running stack of `name` and its Fanout."""
    if name == "slack":
        stack = Stack("tests.e2e.timeline_app.main:app", upstreams=UPSTREAMS, app_dir=REPO)
    else:
        stack = Stack(behaviour=Behaviour(delay_ms=20))
    with stack:
        assert stack.app is not None
        if name == "slack":
            install(stack.upstreams, SUMMARY_DELAYS)
        fanout = Fanout(stack.app, stack.upstreams)
        try:
            yield fanout
        finally:
            fanout.close()


@dataclass
class Tally:
    runs: int = 0
    #: {upstream: runs whose interval contained the truth}
    inside: dict[str, int] = field(default_factory=dict)
    half_widths: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)
    slack_ms: list[float] = field(default_factory=list)
    saves_shown: int = 0
    ratios: list[float] = field(default_factory=list)


def measure(name: str, runs: int) -> Tally:
    path, truth = SERVICES[name]
    tally = Tally()
    with service(name) as fanout:
        for index in range(runs):
            result = fanout.critical_path(path)
            tally.runs += 1
            by_upstream = {t.upstream: t for t in result.targets}
            cells = []
            for upstream, weight in truth.items():
                target = by_upstream[upstream]
                inside = abs(target.weight - weight) <= target.half_width
                tally.inside[upstream] = tally.inside.get(upstream, 0) + inside
                tally.half_widths.setdefault(upstream, []).append(target.half_width)
                tally.weights.setdefault(upstream, []).append(target.weight)
                cells.append(
                    f"{upstream} {target.weight:.2f} +/-{target.half_width:.2f}"
                    f"{'' if inside else ' MISS'}"
                )
            if name == "slack":
                reviews = by_upstream["reviews"]
                tally.slack_ms.append(reviews.slack_ms)
                tally.saves_shown += math.isfinite(reviews.saves_per_10ms)
                cells.append(f"slack {reviews.slack_ms:.0f} ms")
            ratio = result.elapsed_s / result.baseline_s
            tally.ratios.append(ratio)
            print(
                f"{name} run {index + 1}: {result.baseline_s * 1000:.0f} ms, "
                f"{result.elapsed_s:.1f} s ({ratio:.0f}x): " + ", ".join(cells),
                flush=True,
            )
    return tally


def summary(tallies: dict[str, Tally]) -> list[str]:
    lines = [
        "| service | upstream | truth | interval holds it | mean weight | mean +/- |",
        "|---|---|---|---|---|---|",
    ]
    for name, tally in tallies.items():
        for upstream, truth in SERVICES[name][1].items():
            lines.append(
                f"| {name} | {upstream} | {truth:g} | {tally.inside[upstream]} of {tally.runs}"
                f" | {statistics.fmean(tally.weights[upstream]):.2f}"
                f" | {statistics.fmean(tally.half_widths[upstream]):.2f} |"
            )
    lines.append("")
    for name, tally in tallies.items():
        lines.append(
            f"- {name}: experiment time {min(tally.ratios):.0f}x to {max(tally.ratios):.0f}x"
            f" the endpoint's latency (median {statistics.median(tally.ratios):.0f}x)"
        )
        if tally.slack_ms:
            lines.append(
                f"- {name}: reviews' slack {min(tally.slack_ms):.0f} to "
                f"{max(tally.slack_ms):.0f} ms (truth {SUMMARY_SLACK_MS:g}); a 'saves' figure"
                f" shown for it in {tally.saves_shown} of {tally.runs} runs"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--only", choices=sorted(SERVICES), action="append", default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="write the summary here")
    args = parser.parse_args()
    tallies = {name: measure(name, args.runs) for name in args.only or SERVICES}
    text = "\n".join(summary(tallies))
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
