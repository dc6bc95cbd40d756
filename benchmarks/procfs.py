"""What a process costs, read from Linux's /proc: CPU seconds and memory (no psutil).

Shared by the benchmarks that watch the app process from the outside.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytest_fanout.servers.proctree import thread_schedstats


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_seconds(pid: int) -> float:
    """CPU seconds the live threads of a process have run, to the nanosecond (the kernel's
    schedstat, `proctree.thread_schedstats`); `cpu_seconds` where /proc does not say. For
    turns of a few tenths of a second: /proc/<pid>/stat counts in clock ticks (10 ms), and
    a 0.15 s turn read there is +-7%. Threads that ended are left out (use `cpu_seconds`
    for a process that starts and ends threads as it works)."""
    stats = thread_schedstats(pid)
    if not stats:
        return cpu_seconds(pid)
    return sum(run for run, _ in stats.values()) / 1e9


def status_kib(pid: int, field: str) -> int:
    """A memory line of /proc/<pid>/status in KiB: VmRSS (now) or VmHWM (the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"no {field} for pid {pid} (a zombie or a kernel thread)")
