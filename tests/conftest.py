"""Shared test helpers: the repository root and a scan for leftover processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_fanout.proctree import (
    command_line,
    descendants_of,
    pid_alive,
    processes_with_env,
)

__all__ = ["REPO", "descendants_of", "pid_alive", "processes_tagged"]

REPO = Path(__file__).resolve().parent.parent


def processes_tagged(tag: str) -> dict[int, str]:
    """Live processes whose environment holds FANOUT_TEST_TAG=<tag>: every process a
    tagged run started, even one re-parented after its parent died."""
    return {pid: command_line(pid) for pid in processes_with_env("FANOUT_TEST_TAG", tag)}


@pytest.fixture
def repo() -> Path:
    return REPO
