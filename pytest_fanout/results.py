"""Where the session keeps its measurements, for the summary, the gate and other plugins."""

from __future__ import annotations

import pytest

from pytest_fanout.measure import Measurement

#: Every Measurement the session's tests took, in order.
MEASUREMENTS_KEY = pytest.StashKey[list[Measurement]]()


def session_measurements(config: pytest.Config) -> list[Measurement]:
    """The session's measurements (an empty list before the first one)."""
    return config.stash.setdefault(MEASUREMENTS_KEY, [])
