"""Weights and waterfalls in saved runs, end to end: a real inner session records them
(`fanout.critical_path(..., record=m)`, `fanout.waterfall(m)`), `--fanout-save` writes
them, and `fanout compare` against a copy whose structure changed (a second round of the
upstream) reports a regression and shows both waterfalls in the Markdown report; against a
baseline whose weight has no interval it says the weights were not gated, and why."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = f"""
[pytest]
fanout_app_dir = {REPO}
fanout_delay_ms = 20
"""

#: The experiment's cap: its 16 requests of ~45 ms take about 1 s when quiet, but a loaded
#: runner (the suite at -n 4 on 2 cores) once spent budget_s=4 before enough changed runs,
#: and the saved weight had no interval. A cap is not a cost: quick runs end sooner.
BUDGET_S = 30

TEST = f"""
def test_two_sequential_calls(fanout):
    m = fanout.measure("/sync/2", repeat=3)
    result = fanout.critical_path("/sync/2", budget_s={BUDGET_S}, record=m)
    waterfall = fanout.waterfall(m)
    assert waterfall.calls == 2 and [g.note for g in waterfall.groups] == ["one at a time"]
    assert result.targets[0].calls_per_request == 2
"""


def test_weights_are_saved_and_a_second_round_is_a_regression(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_structure=TEST)
    base = pytester.path / "base.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--fanout-save={base}", timeout=180
    )
    result.assert_outcomes(passed=1)
    data = json.loads(base.read_text())
    (case,) = data["cases"]
    record = case["record"]
    (target,) = record["critical_path"]["targets"]
    assert target["upstream"] == "default" and target["calls_per_request"] == 2
    assert [c["path"] for c in record["timeline"]["calls"]] == ["/items/0", "/items/1"]
    weight, half = target["weight"], target["half_width"]
    assert weight is not None and half is not None, record["critical_path"]

    # The same case, paid once more per request (as a second sequential round would be);
    # twice more if a busy runner left intervals too wide to tell one round apart.
    worse = copy.deepcopy(data)
    changed = worse["cases"][0]["record"]["critical_path"]["targets"][0]
    changed["weight"] = weight + 1 + math.floor(2 * half)
    head = pytester.path / "head.json"
    head.write_text(json.dumps(worse))
    report = pytester.path / "pr.md"
    compare = _compare(base, head, "--report-md", str(report))
    assert compare.returncode == 1, compare.stdout + compare.stderr
    assert "REGRESSION" in compare.stdout and "default: weight" in compare.stdout
    assert "not gated: critical-path weights" not in compare.stdout
    markdown = report.read_text()
    assert "**baseline**" in markdown and "**now**" in markdown

    # A baseline whose weight has no interval (a budget spent too soon): the gate cannot see
    # the round more, and says so rather than a bare "same".
    blind = copy.deepcopy(data)
    blind["cases"][0]["record"]["critical_path"]["targets"][0]["half_width"] = None
    base.write_text(json.dumps(blind))
    compare = _compare(base, head)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    # "same (not gated: median, p95, critical-path weights)": repeat=3 cannot judge timings.
    assert "critical-path weights)" in compare.stdout
    assert "the baseline's weight for 'default' has no interval" in compare.stdout
    last = compare.stdout.splitlines()[-1]
    assert last.startswith("fanout gate passed: 1 same, not gated: ")
    assert last.endswith("critical-path weights in 1")


def _compare(base: Path, head: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "compare", str(base), str(head), *more],
        capture_output=True,
        text=True,
        timeout=60,
    )
