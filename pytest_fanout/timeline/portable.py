"""What the gate reads from the timeline: changes of structure, and waterfalls to show.

Weights do not depend on the machine's speed (paid once is paid once on any
runner), so a saved baseline from any machine can be compared with them: a
weight going from 1 to 2 is a second sequential round, a regression of
structure. A change counts only when it is at least half a round AND beyond
both runs' 95% intervals; without an interval on either side it is not
judged (never called "same": `weight_changes` has nothing to say, and
`weights_not_compared` says why, which the gate shows as "not gated").
Both functions take `Measurement.to_dict()` records, as saved runs hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_fanout.timeline.causal import BASELINE_RUNS, WARM_UP_RUNS, design_runs
from pytest_fanout.timeline.waterfall import Waterfall

#: The smallest change of a weight that is a change of structure (half a round).
STRUCTURAL_STEP = 0.5


@dataclass(frozen=True)
class WeightChange:
    """One upstream's weight in the baseline and now."""

    upstream: str
    base: float
    now: float
    #: Half widths of the two 95% intervals (summed over the upstream's routes).
    base_half_width: float
    now_half_width: float

    @property
    def regressed(self) -> bool:
        return self.now > self.base

    def __str__(self) -> str:
        way = "paid more often" if self.regressed else "paid less often"
        return (
            f"{self.upstream}: weight {self.base:.2f} -> {self.now:.2f} ({way}: about "
            f"{_times(self.base)} -> {_times(self.now)} per request; intervals "
            f"+/-{self.base_half_width:.2f} and +/-{self.now_half_width:.2f})"
        )


def _times(weight: float) -> str:
    rounds = round(weight)
    return {0: "never on the critical path", 1: "once", 2: "twice"}.get(rounds, f"{rounds} times")


def _weights(record: Mapping[str, Any]) -> dict[str, tuple[float, float]] | None:
    """{upstream: (weight, half width)} summed over routes; None without recorded weights or
    when any target has no interval (not enough runs to judge)."""
    return _read_weights(record, "")[0]


def _read_weights(
    record: Mapping[str, Any], side: str
) -> tuple[dict[str, tuple[float, float]] | None, str]:
    """(`_weights`, why they are None, in words naming `side`: "the baseline")."""
    data = record.get("critical_path")
    if data is None:
        return None, f"no critical-path weights in {side}"
    if not isinstance(data, Mapping) or not isinstance(data.get("targets"), list):
        return None, f"{side}'s critical-path record is unreadable"
    out: dict[str, tuple[float, float]] = {}
    for target in data["targets"]:
        if not isinstance(target, Mapping) or not isinstance(target.get("upstream"), str):
            return None, f"{side}'s critical-path record is unreadable"
        weight, half = target.get("weight"), target.get("half_width")
        if not isinstance(weight, int | float) or not isinstance(half, int | float):
            label = " ".join(str(x) for x in (target["upstream"], target.get("route")) if x)
            what = "no weight" if not isinstance(weight, int | float) else "no interval"
            return None, f"{side}'s weight for {label!r} has {what}{_runs(data)}"
        old = out.get(target["upstream"], (0.0, 0.0))
        out[target["upstream"]] = (old[0] + weight, old[1] + half)
    return out, ""


def _runs(data: Mapping[str, Any]) -> str:
    """ " (too few runs: 9 of 16 in 4.0 s; raise budget_s)" when the experiment's budget
    ended it early, " (16 runs in 0.8 s)" when not, "" when the record does not say."""
    runs, elapsed = data.get("runs"), data.get("elapsed_s")
    if not isinstance(runs, int) or isinstance(runs, bool):
        return ""
    spent = f" in {elapsed:.1f} s" if isinstance(elapsed, int | float) else ""
    planned = WARM_UP_RUNS + BASELINE_RUNS + design_runs(len(data["targets"]))
    if runs < planned:
        return f" (too few runs: {runs} of {planned}{spent}; raise budget_s)"
    return f" ({runs} runs{spent})"


def weights_not_compared(base: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """Why the two records' critical-path weights cannot be compared ("no critical-path
    weights in the baseline", "the baseline's weight for 'default' has no interval (too
    few runs: 9 of 16 in 4.0 s; raise budget_s)"); "" when they can, or when neither
    record asked for weights (a case without `critical_path` is not concerned).
    `weight_changes` says nothing of such records: this says why, so the gate never calls
    them "same"."""
    if base.get("critical_path") is None and now.get("critical_path") is None:
        return ""
    whys = [
        _read_weights(record, side)[1]
        for record, side in ((base, "the baseline"), (now, "this run"))
    ]
    return "; ".join(w for w in whys if w)


def weight_changes(base: Mapping[str, Any], now: Mapping[str, Any]) -> list[WeightChange]:
    """Changes of structure between two measurement records, regressions first; [] when
    there is none, or when either side has no weights to compare (see `comparable`)."""
    old, new = _weights(base), _weights(now)
    if old is None or new is None:
        return []
    changes = []
    for upstream in list(old) + [u for u in new if u not in old]:
        b, bh = old.get(upstream, (0.0, 0.0))
        n, nh = new.get(upstream, (0.0, 0.0))
        if abs(n - b) >= STRUCTURAL_STEP and abs(n - b) > bh + nh:
            changes.append(WeightChange(upstream, b, n, bh, nh))
    return sorted(changes, key=lambda c: not c.regressed)


def comparable(base: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Both records hold weights with intervals: `weight_changes` judged them."""
    return _weights(base) is not None and _weights(now) is not None


def waterfall_markdown(base: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """The Markdown of a regressed case's waterfalls, base then now ("" when neither run
    recorded one): Mermaid gantt blocks, which GitHub draws."""
    parts = []
    for label, record in (("baseline", base), ("now", now)):
        data = record.get("timeline")
        if isinstance(data, Mapping):
            try:
                waterfall = Waterfall.from_dict(dict(data))
            except (KeyError, TypeError, ValueError):
                parts.append(f"*{label}: the saved waterfall is unreadable*")
                continue
            parts.append(f"**{label}**\n\n{waterfall.mermaid()}")
        else:
            parts.append(f"*{label}: no waterfall recorded (fanout.waterfall(m) records one)*")
    if all(p.startswith("*") and "no waterfall" in p for p in parts):
        return ""
    return "<details><summary>waterfall</summary>\n\n" + "\n\n".join(parts) + "\n\n</details>"
