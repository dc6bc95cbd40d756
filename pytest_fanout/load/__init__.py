"""Locust from pytest and the command line: a bounded subprocess, its results, thresholds.

* `runner`: `run_locust()`, Locust as a subprocess (never imported here: gevent
  would patch pytest);
* `results`: `LoadResult` / `EndpointResult`, parsed from Locust's JSON report;
* `thresholds`: the `--fanout-max-*` checks (pure logic);
* `limits`: the upper bound of every rate, count, size and duration an option takes;
* `guard`: runs Locust so that it and its folder end with the harness;
* `target`: the one `--host` check (is it there?) Locust and `fanout capacity` make;
* `plugin`: the `fanout_load` fixture;
* `harness/locustfile.py`: the locustfile shipped in the wheel (the Locust side
  itself is `pytest_fanout.locust`, imported only by locustfiles);
* `exact`: exact latency (HdrHistogram) and how it reaches a `LoadResult`;
* `arrival`, `abort` (Locust side, imported by `pytest_fanout.locust`): the
  open model (`--fanout-arrival-rate`) and `--fanout-abort-on-fail`;
* `capacity` (the search, its Locust steps and reports) and `capacity_locustfile`: what
  `fanout capacity` (pytest_fanout/cli/capacity.py) runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_fanout.limits import lazy_names

if TYPE_CHECKING:
    from pytest_fanout.load.results import (
        EXIT_FAILED_REQUESTS,
        EXIT_OK,
        EXIT_TARGET,
        EXIT_THRESHOLD,
        EXIT_USAGE,
        SCHEMA,
        TOTAL_NAME,
        EndpointResult,
        LoadResult,
        OpenModelResult,
        parse_stats_json,
        percentile_from_histogram,
    )
    from pytest_fanout.load.runner import (
        EMBEDDED_PREFIX,
        LOCUSTFILE_ENV,
        MARKER_ENV,
        LoadRunError,
        default_locustfile,
        kill_marked,
        locust_command,
        marked_processes,
        run_locust,
    )
    from pytest_fanout.load.thresholds import VIOLATION_PREFIX, Thresholds, Violation

#: Each public name loads with its module on first use (pytest imports this package
#: at start-up: pytest_fanout.limits.lazy_names).
__getattr__ = lazy_names(
    __name__,
    {
        "EXIT_FAILED_REQUESTS": "pytest_fanout.load.results",
        "EXIT_OK": "pytest_fanout.load.results",
        "EXIT_TARGET": "pytest_fanout.load.results",
        "EXIT_THRESHOLD": "pytest_fanout.load.results",
        "EXIT_USAGE": "pytest_fanout.load.results",
        "SCHEMA": "pytest_fanout.load.results",
        "TOTAL_NAME": "pytest_fanout.load.results",
        "EndpointResult": "pytest_fanout.load.results",
        "LoadResult": "pytest_fanout.load.results",
        "OpenModelResult": "pytest_fanout.load.results",
        "parse_stats_json": "pytest_fanout.load.results",
        "percentile_from_histogram": "pytest_fanout.load.results",
        "EMBEDDED_PREFIX": "pytest_fanout.load.runner",
        "LOCUSTFILE_ENV": "pytest_fanout.load.runner",
        "MARKER_ENV": "pytest_fanout.load.runner",
        "LoadRunError": "pytest_fanout.load.runner",
        "default_locustfile": "pytest_fanout.load.runner",
        "kill_marked": "pytest_fanout.load.runner",
        "locust_command": "pytest_fanout.load.runner",
        "marked_processes": "pytest_fanout.load.runner",
        "run_locust": "pytest_fanout.load.runner",
        "VIOLATION_PREFIX": "pytest_fanout.load.thresholds",
        "Thresholds": "pytest_fanout.load.thresholds",
        "Violation": "pytest_fanout.load.thresholds",
    },
)

__all__ = [
    "EMBEDDED_PREFIX",
    "EXIT_FAILED_REQUESTS",
    "EXIT_OK",
    "EXIT_TARGET",
    "EXIT_THRESHOLD",
    "EXIT_USAGE",
    "LOCUSTFILE_ENV",
    "MARKER_ENV",
    "SCHEMA",
    "TOTAL_NAME",
    "VIOLATION_PREFIX",
    "EndpointResult",
    "LoadResult",
    "LoadRunError",
    "OpenModelResult",
    "Thresholds",
    "Violation",
    "default_locustfile",
    "kill_marked",
    "locust_command",
    "marked_processes",
    "parse_stats_json",
    "percentile_from_histogram",
    "run_locust",
]
