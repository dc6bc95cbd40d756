"""Which processes are alive, read from Linux's /proc: the harness's proof of "no orphans".

Used by the Locust runner to sweep what a run left behind, and by the tests
and benchmarks to find a stack's processes (a process started by a marked run
carries the marker in its environment even after its parent is gone).
"""

from __future__ import annotations

import os
import threading
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
    The one reader of these figures: the probe's wait for a CPU, the stall watch's (kept open,
    `SchedStats`) and the held probe's busy check."""
    reader = SchedStats(pid)
    try:
        return reader.read()
    finally:
        reader.close()


class SchedStats:
    """`thread_schedstats` from files kept open and read again with pread: about ten times
    cheaper than opening each file per reading, which the stall watch does ~50 times a second
    (its cost is the app's CPU). Safe to share between threads; `close()` when done."""

    def __init__(self, pid: int | str = "self") -> None:
        self._base = f"{PROC}/{pid}/task/"
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def read(self) -> dict[str, tuple[int, int]] | None:
        with self._lock:
            try:
                tids = os.listdir(self._base)
            except OSError:
                return None
            fds = self._fds
            for gone in fds.keys() - set(tids):
                os.close(fds.pop(gone))
            out: dict[str, tuple[int, int]] = {}
            for tid in tids:
                figures = self._figures(tid)
                if figures is None and tid in fds:  # a stale file (the id reused): once more
                    os.close(fds.pop(tid))
                    figures = self._figures(tid)
                if figures is not None:
                    out[tid] = figures
            return out

    def _figures(self, tid: str) -> tuple[int, int] | None:
        fd = self._fds.get(tid)
        try:
            if fd is None:
                fd = self._fds[tid] = os.open(f"{self._base}{tid}/schedstat", os.O_RDONLY)
            run, wait = os.pread(fd, 128, 0).split()[:2]
            return int(run), int(wait)
        except (OSError, ValueError):
            return None  # a thread that ended meanwhile

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


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
