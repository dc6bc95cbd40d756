"""The reference app's path shapes, for the harness's `pytest_fanout_path_shape` hook.

The harness knows no path of any app: this plugin tells it how the reference
app's routes fan out, wherever the reference app is measured under pytest
(tests/conftest.py loads it; inner pytester sessions and benchmarks/perf load
it through `SHAPES_CONFTEST`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: path pattern -> how its n calls run: "sequential", "all" at once, or "bounded" by c.
REFERENCE_PATHS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/sync/(?P<n>\d+)$"), "sequential"),
    (re.compile(r"^/blocking/(?P<n>\d+)$"), "sequential"),
    (re.compile(r"^/async/(?P<n>\d+)$"), "all"),
    (re.compile(r"^/async_sem/(?P<n>\d+)/(?P<c>\d+)$"), "bounded"),
]

#: A conftest.py body that loads this plugin in a session outside this repository's tests.
SHAPES_CONFTEST = (
    f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
    "from tests.reference_shapes import pytest_fanout_path_shape  # noqa: F401\n"
)


def reference_shape(path: str) -> tuple[int, int] | None:
    """(n, concurrency) of a reference-app path, else None."""
    bare = path.split("?", 1)[0]
    for pattern, kind in REFERENCE_PATHS:
        match = pattern.match(bare)
        if not match:
            continue
        n = int(match["n"])
        if kind == "sequential":
            return n, 1
        if kind == "all":
            return n, n
        return n, min(n, int(match["c"]))
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_fanout_path_shape(path: str) -> tuple[int, int] | None:
    return reference_shape(path)
