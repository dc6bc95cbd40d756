"""The A/B validation's slow commits are real one-line commits of the app's own setting."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.gate_validation import (
    AB_SLOWDOWNS,
    CPU_SERVICE,
    LATENCY_SERVICES,
    make_commits,
    make_slow_commits,
)
from tests.helpers import REPO


def test_each_slowdown_is_one_commit_changing_the_default_cost(tmp_path: Path) -> None:
    clone = tmp_path / "repo"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
        check=True,
        timeout=120,
    )
    base, commits = make_slow_commits(clone)
    assert set(commits) == set(AB_SLOWDOWNS)
    for name, commit in commits.items():
        diff = subprocess.run(
            ["git", "diff", base, commit, "--", "app/settings.py"],
            cwd=clone,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        added = [line for line in diff.splitlines() if line.startswith("+    call_overhead_ms")]
        assert len(added) == 1 and added[0].endswith(f"= {AB_SLOWDOWNS[name]:g}"), diff


def test_each_latency_change_is_one_commit_of_one_place(tmp_path: Path) -> None:
    """The --latency validation's commits: +20%, 2x and the gather made a loop, per service."""
    clone = tmp_path / "repo"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
        check=True,
        timeout=120,
    )
    for service in (*LATENCY_SERVICES, CPU_SERVICE):
        base, commits = make_commits(clone, service)
        assert set(commits) == set(service.commits)
        for kind, commit in commits.items():
            relative, _, value = service.commits[kind]
            diff = subprocess.run(
                ["git", "diff", "-U0", base, commit],
                cwd=clone,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert diff.count("+++ b/") == 1 and f"+++ b/{relative}" in diff, diff
            assert diff.count("\n@@ ") == 1 and value.strip().splitlines()[0] in diff, diff
