"""The regression gate: saved runs, a noise-aware comparison, verdicts and reports.

A pull request should fail when it makes the fan-out slower and never when it
did not. Raw seconds against one saved run with a fixed percentage (what
pytest-benchmark does) cries wolf on noisy runners and changed machines, so
the gate compares the wall time only where it is comparable (A/B in one run,
or a baseline from the same machine fingerprint), portable and exact metrics
(efficiency, the structure of waves) against any baseline, calls a case a
"regression" only when the change is beyond the rule's threshold AND beyond
the noise (a one-sided Mann-Whitney U test), and says "not gated", with why,
of what it did not compare: a run in which nothing was gated fails.

One job a module:

* `stats`: Mann-Whitney U, the bootstrap interval and the smallest detectable
  change (pure statistics);
* `machine`: the machine fingerprint a saved run records (is latency comparable?);
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

from typing import TYPE_CHECKING

from pytest_fanout.limits import lazy_names

if TYPE_CHECKING:
    from pytest_fanout.gate.report import (
        regression_lines,
        render_comparison_markdown,
        render_comparison_text,
        render_run_markdown,
    )
    from pytest_fanout.gate.rules import DEFAULT_ALPHA, DEFAULT_FAIL_ON, GateConfig, parse_fail_on
    from pytest_fanout.gate.runs import SCHEMA_VERSION, GateError, Run
    from pytest_fanout.gate.verdict import (
        EXIT_NOT_GATED,
        IMPROVEMENT,
        NOT_GATED,
        REGRESSION,
        SAME,
        VERDICTS,
        CaseVerdict,
        Comparison,
        compare_runs,
    )

#: Each public name loads with its module on first use (pytest imports this package
#: at start-up: pytest_fanout.limits.lazy_names).
__getattr__ = lazy_names(
    __name__,
    {
        "regression_lines": "pytest_fanout.gate.report",
        "render_comparison_markdown": "pytest_fanout.gate.report",
        "render_comparison_text": "pytest_fanout.gate.report",
        "render_run_markdown": "pytest_fanout.gate.report",
        "DEFAULT_ALPHA": "pytest_fanout.gate.rules",
        "DEFAULT_FAIL_ON": "pytest_fanout.gate.rules",
        "GateConfig": "pytest_fanout.gate.rules",
        "parse_fail_on": "pytest_fanout.gate.rules",
        "SCHEMA_VERSION": "pytest_fanout.gate.runs",
        "GateError": "pytest_fanout.gate.runs",
        "Run": "pytest_fanout.gate.runs",
        "EXIT_NOT_GATED": "pytest_fanout.gate.verdict",
        "IMPROVEMENT": "pytest_fanout.gate.verdict",
        "NOT_GATED": "pytest_fanout.gate.verdict",
        "REGRESSION": "pytest_fanout.gate.verdict",
        "SAME": "pytest_fanout.gate.verdict",
        "VERDICTS": "pytest_fanout.gate.verdict",
        "CaseVerdict": "pytest_fanout.gate.verdict",
        "Comparison": "pytest_fanout.gate.verdict",
        "compare_runs": "pytest_fanout.gate.verdict",
    },
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FAIL_ON",
    "EXIT_NOT_GATED",
    "IMPROVEMENT",
    "NOT_GATED",
    "REGRESSION",
    "SAME",
    "SCHEMA_VERSION",
    "VERDICTS",
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
