"""One row of the table: a (client, pattern, n, delay) cell with every sample kept."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from pytest_fanout.measurement import ideal_seconds


@dataclass
class Row:
    """Every sample of one cell, and what the table derives from them."""

    client: str
    pattern: str
    n: int
    delay_ms: float
    concurrency: int
    walls: list[float] = field(default_factory=list)
    ok: list[int] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    cpu_s: float = 0.0

    @property
    def median_s(self) -> float:
        return statistics.median(self.walls)

    @property
    def ideal_s(self) -> float:
        return ideal_seconds(self.delay_ms / 1000, self.n, self.concurrency)

    @property
    def efficiency(self) -> float | None:
        return self.ideal_s / self.median_s if self.delay_ms > 0 else None

    @property
    def cpu_per_call_ms(self) -> float:
        return 1000 * self.cpu_s / (self.n * len(self.walls))

    @property
    def calls_per_s(self) -> float:
        return self.n / self.median_s

    def to_dict(self) -> dict[str, object]:
        return {
            "client": self.client,
            "pattern": self.pattern,
            "n": self.n,
            "delay_ms": self.delay_ms,
            "concurrency": self.concurrency,
            "walls": self.walls,
            "ok": self.ok,
            "peaks": self.peaks,
            "cpu_s": self.cpu_s,
        }


def repeats_after(first_wall_s: float, repeats: int) -> int:
    """Samples to take in all: fewer when one is slow, so the run stays under ~5 minutes."""
    if first_wall_s >= 8:
        return 1
    if first_wall_s >= 1:
        return min(repeats, 3)
    return repeats


def find(rows: list[Row], client: str, pattern: str, n: int, delay: float) -> Row | None:
    """The row of one cell, if it was measured."""
    for row in rows:
        if row.client == client and row.pattern == pattern and row.n == n and row.delay_ms == delay:
            return row
    return None


def print_row(row: Row) -> None:
    """One progress line while the benchmark runs."""
    eff = f"{row.efficiency:.2f}" if row.efficiency is not None else "-"
    print(
        f"  {row.client:34s} {row.pattern:22s} n={row.n:<5d} {row.delay_ms:>3.0f}ms "
        f"wall {row.median_s:7.3f}s ok {min(row.ok)}/{row.n} peak {max(row.peaks):<5d} "
        f"eff {eff:>5s} cpu/call {row.cpu_per_call_ms:.3f}ms ({len(row.walls)} samples)",
        flush=True,
    )
