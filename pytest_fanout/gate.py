"""The regression gate: saved runs, a noise-aware comparison, verdicts and reports.

A pull request should fail when it makes the fan-out slower and never when it
did not. Raw seconds against one saved run with a fixed percentage (what
pytest-benchmark does) cries wolf on noisy runners and changed machines, so
the gate compares portable metrics by default, calls a case "slower" only when
the change is beyond the rule's threshold AND beyond the noise (a one-sided
Mann-Whitney U test), and reports faster, new and missing cases without
failing on them.

This module is the facade: `from pytest_fanout.gate import ...` keeps working
while each job lives in its own module:

* `gate_stats`: Mann-Whitney U and the bootstrap interval (pure statistics);
* `gate_runs`: the saved-run JSON (`Run`, `Case`: measurements and Locust
  rows), `GateError`, the context;
* `gate_metrics`: what a rule can name and how it is read from a case;
* `gate_rules`: the --fanout-fail-on syntax and `GateConfig`;
* `gate_verdict`: `compare_runs` and the verdicts;
* `gate_report`: the text table, REGRESSION lines and Markdown.

Pure logic (no pytest import): the pytest plugin (`gate_plugin.py`) and the
`fanout compare` command (`gate_cli.py`) are thin shells around it.
"""

from __future__ import annotations

from pytest_fanout.gate_metrics import METRICS, Metric, Values
from pytest_fanout.gate_report import (
    HEADERS,
    RUN_HEADERS,
    measurement_rows,
    regression_lines,
    render_comparison_markdown,
    render_comparison_text,
    render_run_markdown,
    summary_line,
    verdict_rows,
    write_text,
)
from pytest_fanout.gate_rules import (
    DEFAULT_ALPHA,
    DEFAULT_FAIL_ON,
    REPORTED_RULES,
    GateConfig,
    Rule,
    parse_alpha,
    parse_fail_on,
)
from pytest_fanout.gate_runs import (
    CONTEXT_PACKAGES,
    KIND_LOCUST,
    KIND_MEASUREMENT,
    SCHEMA,
    SCHEMA_VERSION,
    Case,
    GateError,
    Run,
    case_id,
    collect_context,
    load_case_record,
)
from pytest_fanout.gate_stats import (
    EXACT_LIMIT,
    HISTOGRAM_SAMPLE_LIMIT,
    bootstrap_interval,
    histogram_sample,
    mann_whitney_u,
)
from pytest_fanout.gate_verdict import (
    FASTER,
    MIN_SAMPLES,
    MISSING,
    NEW,
    SAME,
    SKIPPED,
    SLOWER,
    CaseVerdict,
    Comparison,
    MetricChange,
    compare_runs,
    compare_values,
    context_notes,
)

__all__ = [
    "CONTEXT_PACKAGES",
    "DEFAULT_ALPHA",
    "DEFAULT_FAIL_ON",
    "EXACT_LIMIT",
    "FASTER",
    "HEADERS",
    "HISTOGRAM_SAMPLE_LIMIT",
    "KIND_LOCUST",
    "KIND_MEASUREMENT",
    "METRICS",
    "MIN_SAMPLES",
    "MISSING",
    "NEW",
    "REPORTED_RULES",
    "RUN_HEADERS",
    "SAME",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SKIPPED",
    "SLOWER",
    "Case",
    "CaseVerdict",
    "Comparison",
    "GateConfig",
    "GateError",
    "Metric",
    "MetricChange",
    "Rule",
    "Run",
    "Values",
    "bootstrap_interval",
    "case_id",
    "collect_context",
    "compare_runs",
    "compare_values",
    "context_notes",
    "histogram_sample",
    "load_case_record",
    "mann_whitney_u",
    "measurement_rows",
    "parse_alpha",
    "parse_fail_on",
    "regression_lines",
    "render_comparison_markdown",
    "render_comparison_text",
    "render_run_markdown",
    "summary_line",
    "verdict_rows",
    "write_text",
]
