"""Which processes are alive, read from Linux's /proc: the harness's proof of "no orphans".

Used by the Locust runner to sweep what a run left behind, and by the tests
and benchmarks to find a stack's processes (a process started by a marked run
carries the marker in its environment even after its parent is gone).
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def thread_schedstats(pid: int | str = "self") -> dict[str, tuple[int, int]] | None:
    """{thread id: (nanoseconds it ran, nanoseconds it waited on a run queue)} for every thread
    of `pid` (the first two fields of /proc/<pid>/task/<tid>/schedstat), or None when /proc
    does not say (not Linux, the process is gone). A thread that ends meanwhile is left out.
    The one reader of these figures: the probe's wait for a CPU, the stall watch's and the
    held probe's busy check."""
    base = PROC / str(pid) / "task"
    try:
        tids = os.listdir(base)
    except OSError:
        return None
    out: dict[str, tuple[int, int]] = {}
    for tid in tids:
        try:
            run, wait = (base / tid / "schedstat").read_bytes().split()[:2]
            out[tid] = (int(run), int(wait))
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return out


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie has ended and only waits to be reaped."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _live_pids() -> list[int]:
    me = os.getpid()
    return [int(e.name) for e in PROC.iterdir() if e.name.isdigit() and int(e.name) != me]


def descendants_of(pid: int) -> set[int]:
    """Every live descendant of `pid`: children, grandchildren, ..."""
    children: dict[int, list[int]] = {}
    for child in _live_pids():
        fields = _stat_fields(child)
        if fields is not None and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def processes_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment holds NAME=value (inherited by all they start)."""
    needle = f"{name}={value}".encode()
    found = []
    for pid in _live_pids():
        try:
            environ = (PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and pid_alive(pid):
            found.append(pid)
    return found


def command_line(pid: int) -> str:
    """The command line of `pid`, spaces between arguments ('' once it has gone)."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""
