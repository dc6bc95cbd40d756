"""What the gate reads from the timeline: changes of structure, and waterfalls to show.

Weights do not depend on the machine's speed (paid once is paid once on any
runner), so a saved baseline from any machine can be compared with them: a
weight going from 1 to 2 is a second sequential round, a regression of
structure. A change counts only when it is at least half a round AND beyond
both runs' 95% intervals; without an interval on either side it is not
judged (never called "same": `weight_changes` simply has nothing to say).
Both functions take `Measurement.to_dict()` records, as saved runs hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    data = record.get("critical_path")
    if not isinstance(data, Mapping) or not isinstance(data.get("targets"), list):
        return None
    out: dict[str, tuple[float, float]] = {}
    for target in data["targets"]:
        weight, half = target.get("weight"), target.get("half_width")
        if not isinstance(weight, int | float) or not isinstance(half, int | float):
            return None
        old = out.get(target["upstream"], (0.0, 0.0))
        out[target["upstream"]] = (old[0] + weight, old[1] + half)
    return out


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
