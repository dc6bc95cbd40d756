"""`make bench` judges issue 35's targets from rows of one run (benchmarks/physical_limit)."""

from __future__ import annotations

from benchmarks.physical_limit.plan import RAW_CLIENTS
from benchmarks.physical_limit.rows import Row
from benchmarks.physical_limit.targets import verdicts

APP = "app (aiohttp, default)"
POOL = RAW_CLIENTS["aiohttp-pool"][0]


def row(client: str, pattern: str, n: int, wall: float, cpu_s: float, delay: float = 50) -> Row:
    return Row(client, pattern, n, delay, n, walls=[wall], ok=[n], peaks=[n], cpu_s=cpu_s)


def judged(app_wall: float, app_cpu_s: float) -> dict[str, bool | None]:
    rows = [
        row(APP, "async", 1000, app_wall, app_cpu_s),
        row(POOL, "gather", 1000, 0.100, 0.100),  # 0.1 ms of CPU a call
    ]
    guards = {"admission": 2.0, "deadline": 4.0}
    return {v.name: v.met for v in verdicts(rows, None, "aiohttp", guards)}


def test_the_app_is_judged_against_raw_aiohttp_with_the_same_pool_at_1_15x_and_1_3x() -> None:
    wall = f"/async/1000 @50ms wall / {POOL} gather(1000)"
    cpu = f"client CPU per call, app vs {POOL} (n=1000, 50ms)"
    inside = judged(app_wall=0.114, app_cpu_s=0.129)
    assert inside[wall] is True and inside[cpu] is True
    outside = judged(app_wall=0.116, app_cpu_s=0.131)
    assert outside[wall] is False and outside[cpu] is False


def test_the_guards_cost_is_stated_with_no_target() -> None:
    met = judged(app_wall=0.1, app_cpu_s=0.1)
    guards = [name for name in met if name.startswith("cost of the ")]
    assert len(guards) == 2 and all(met[name] is None for name in guards)
