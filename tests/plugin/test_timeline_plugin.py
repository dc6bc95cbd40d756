"""Weights and waterfalls in saved runs, end to end: a real inner session records them
(`fanout.critical_path(..., record=m)`, `fanout.waterfall(m)`), `--fanout-save` writes
them, and `fanout compare` against a copy whose structure changed (a second round of the
upstream) reports a regression and shows both waterfalls in the Markdown report."""

from __future__ import annotations

import copy
import json
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

TEST = """
def test_two_sequential_calls(fanout):
    m = fanout.measure("/sync/2", repeat=3)
    result = fanout.critical_path("/sync/2", budget_s=4, record=m)
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

    # The same case, one more sequential round of the upstream (as a change of code would).
    worse = copy.deepcopy(data)
    changed = worse["cases"][0]["record"]["critical_path"]["targets"][0]
    changed["weight"] = (target["weight"] or 2.0) + 1.0
    head = pytester.path / "head.json"
    head.write_text(json.dumps(worse))
    report = pytester.path / "pr.md"
    compare = subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", "compare", str(base), str(head)]
        + ["--report-md", str(report)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compare.returncode == 1, compare.stdout + compare.stderr
    assert "REGRESSION" in compare.stdout and "default: weight" in compare.stdout
    markdown = report.read_text()
    assert "**baseline**" in markdown and "**now**" in markdown
