"""The test suite's set-up: the reference app's path shapes for `fanout.measure`, and inner
pytest sessions without the installed plugins none of them uses."""

import pytest

from tests.helpers import UNUSED_PLUGINS

pytest_plugins = ["tests.reference_shapes"]


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester, whose sessions block the installed plugins no inner session uses (they
    cost CPU at every start: ~2 s of the ~2.7 s a session takes to start here)."""
    pytester.plugins.extend(f"no:{name}" for name in UNUSED_PLUGINS)
    return pytester
