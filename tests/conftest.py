"""The test suite's set-up: the reference app's path shapes for `fanout.measure`, and inner
pytest sessions without the installed plugins none of them uses."""

import signal

import pytest

from tests.helpers import UNUSED_PLUGINS

# A suite started as a background job of a script (`make test &`, a CI step run with `&`)
# inherits SIGINT ignored, and so would every process it starts: the tests that stop `fanout
# serve`, pytest or Locust with Ctrl-C's SIGINT then waited out their timeouts and failed (9
# of them, 2026-12-06). Python's own handler here gives the children the default at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ["tests.reference_shapes"]


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester, whose sessions block the installed plugins no inner session uses (they
    cost CPU at every start: ~2 s of the ~2.7 s a session takes to start here)."""
    pytester.plugins.extend(f"no:{name}" for name in UNUSED_PLUGINS)
    return pytester


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `slow` first, each group in its collected order: xdist hands out the
    front of the list first, so a 30 s test no longer starts near the end of the run while
    the other workers sit idle (the order is the same on every worker, as xdist needs)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
