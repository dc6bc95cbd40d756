"""Shared test helpers: pytester for plugin tests, and a scan for leftover processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent


def stack_processes(marker: str = "pytest_fanout.child") -> dict[int, str]:
    """Live processes (pid -> command line) whose command line contains `marker`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue  # a zombie has ended; only its exit status is left to collect
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
        if marker in cmdline and int(entry.name) != os.getpid():
            found[int(entry.name)] = cmdline
    return found


def descendants_of(pid: int) -> set[int]:
    """Every live descendant of `pid` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def repo() -> Path:
    return REPO


def processes_tagged(tag: str) -> dict[int, str]:
    """Live processes whose environment holds FANOUT_TEST_TAG=<tag>: every process a
    tagged run started, even one re-parented after its parent died."""
    needle = f"FANOUT_TEST_TAG={tag}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pid_alive(int(entry.name)):
            found[int(entry.name)] = cmdline
    return found
