"""The stub upstream's exact count of calls by method and path, whatever the sample keeps.

`assert_called(times=...)` must judge from every call, not from the recorded
sample (`recorder.py`), so the stub counts each call here as it arrives. The
table is bounded: at most `MAX_PATHS` distinct (method, path) keys, each path
at most `MAX_PATH_CHARS` long; a call past either bound still counts in
`total` and in `uncounted`, so a count judged from the table says when it can
only be a lower bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Distinct (method, path) keys counted one by one.
MAX_PATHS = 10_000
#: Longest path counted under its own key.
MAX_PATH_CHARS = 2048
#: Keys listed in a `count()` answer, most called first.
TOP = 8


class CallCounter:
    """Calls since the last clear: in total, and per (method, path) up to the bounds."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], int] = {}
        self.total = 0
        #: Calls whose key did not fit the table (too many paths, or too long a path).
        self.uncounted = 0

    def add(self, method: str, path: str) -> None:
        self.total += 1
        key = (method, path)
        count = self.by_key.get(key)
        if count is not None:
            self.by_key[key] = count + 1
        elif len(self.by_key) < MAX_PATHS and len(path) <= MAX_PATH_CHARS:
            self.by_key[key] = 1
        else:
            self.uncounted += 1

    def clear(self) -> None:
        self.by_key.clear()
        self.total = 0
        self.uncounted = 0

    def count(self, method: str | None, matches: Callable[[str], bool] | None) -> dict[str, Any]:
        """Calls of `method` (any when None) to paths `matches` accepts (any when None):
        `matching`, `total`, `uncounted` (calls the table could not place: when not 0,
        `matching` is a lower bound) and `top`, the most called keys."""
        wanted = method.upper() if method else None
        matching = 0 if wanted or matches is not None else self.total
        for (key_method, key_path), count in self.by_key.items():
            if not wanted and matches is None:
                break
            if wanted and key_method != wanted:
                continue
            if matches is not None and not matches(key_path):
                continue
            matching += count
        top = sorted(self.by_key.items(), key=lambda item: -item[1])[:TOP]
        return {
            "matching": matching,
            "total": self.total,
            "uncounted": self.uncounted,
            "keys": len(self.by_key),
            "top": [[f"{m} {p}", n] for (m, p), n in top],
        }
