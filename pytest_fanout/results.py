"""Where the session keeps its measurements and load results, for the summary, the gate,
xdist's hand-over and other plugins (a plain module, so any of them can import it)."""

from __future__ import annotations

import pytest

from pytest_fanout.load.results import LoadResult
from pytest_fanout.measure import Measurement

#: Every Measurement the session's tests took, in order.
MEASUREMENTS_KEY = pytest.StashKey[list[Measurement]]()


def session_measurements(config: pytest.Config) -> list[Measurement]:
    """The session's measurements (an empty list before the first one)."""
    return config.stash.setdefault(MEASUREMENTS_KEY, [])


#: Every LoadResult the session's `fanout_load` runs produced, in order.
LOAD_RESULTS_KEY = pytest.StashKey[list[LoadResult]]()


def session_load_results(config: pytest.Config) -> list[LoadResult]:
    """The session's load results (an empty list before the first one)."""
    return config.stash.setdefault(LOAD_RESULTS_KEY, [])


def is_xdist_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker: it hands its results to the controller, which reports."""
    return hasattr(config, "workerinput")
