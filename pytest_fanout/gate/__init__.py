"""The regression gate: saved runs, a noise-aware comparison, verdicts and reports.

A pull request should fail when it makes the fan-out slower and never when it
did not. Raw seconds against one saved run with a fixed percentage (what
pytest-benchmark does) cries wolf on noisy runners and changed machines, so
the gate compares portable metrics by default, calls a case "slower" only when
the change is beyond the rule's threshold AND beyond the noise (a one-sided
Mann-Whitney U test), and reports faster, new and missing cases without
failing on them.

One job a module:

* `stats`: Mann-Whitney U and the bootstrap interval (pure statistics);
* `schema`: reading a saved file without trusting it (regular file, size cap,
  finite JSON, pydantic models of the records);
* `runs`: the saved-run JSON (`Run`, `Case`: measurements and Locust rows),
  `GateError`, the context (with the environment the app ran with);
* `metrics`: what a rule can name and how it is read from a case;
* `rules`: the --fanout-fail-on syntax and `GateConfig`;
* `verdict`: `compare_runs` and the verdicts;
* `report`: the text table, REGRESSION lines and Markdown (with a Mermaid chart);
* `ab`: A/B in one run (a git worktree of the base, its app server, the
  alternating sampler);
* `plugin` (pytest options) and `cli` (`fanout compare`): thin shells.

This `__init__` holds what a user calls; the rest is reached through its module.
"""

from __future__ import annotations

from pytest_fanout.gate.report import (
    regression_lines,
    render_comparison_markdown,
    render_comparison_text,
    render_run_markdown,
)
from pytest_fanout.gate.rules import DEFAULT_ALPHA, DEFAULT_FAIL_ON, GateConfig, parse_fail_on
from pytest_fanout.gate.runs import SCHEMA_VERSION, GateError, Run
from pytest_fanout.gate.verdict import (
    FASTER,
    MISSING,
    NEW,
    SAME,
    SKIPPED,
    SLOWER,
    CaseVerdict,
    Comparison,
    compare_runs,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FAIL_ON",
    "FASTER",
    "MISSING",
    "NEW",
    "SAME",
    "SCHEMA_VERSION",
    "SKIPPED",
    "SLOWER",
    "CaseVerdict",
    "Comparison",
    "GateConfig",
    "GateError",
    "Run",
    "compare_runs",
    "parse_fail_on",
    "regression_lines",
    "render_comparison_markdown",
    "render_comparison_text",
    "render_run_markdown",
]
