"""The stub upstream's memory of what it was asked: the last N requests, bounded.

Each record keeps the method, path, raw query, headers, the body up to a cap
and the delay the stub chose for it, in arrival order. Both the count and the
body cap are settings, so the memory is bounded by count x (body cap + a
small fixed overhead) however long the stub runs.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import Any

#: Records kept (the oldest go first).
DEFAULT_MAX_RECORDS = 10_000
#: Bytes of each body kept.
DEFAULT_MAX_BODY = 64 * 1024

# method, path, raw query, headers (uvicorn's list of byte pairs), body, body truncated,
# delay_ms chosen, status answered (0 until answered).
Record = list[Any]


class Recorder:
    """A bounded deque of requests; `clear()` forgets them, `select()` reads them."""

    def __init__(
        self, max_records: int = DEFAULT_MAX_RECORDS, max_body: int = DEFAULT_MAX_BODY
    ) -> None:
        self.max_body = max_body
        self.records: deque[Record] = deque(maxlen=max_records)
        #: Requests seen since the last clear, including those the bound dropped.
        self.seen = 0

    @property
    def max_records(self) -> int:
        return self.records.maxlen or 0

    def resize(self, max_records: int, max_body: int) -> None:
        self.records = deque(self.records, maxlen=max_records)
        self.max_body = max_body

    def add(
        self, method: str, path: str, query: bytes, headers: list, body: bytes, truncated: bool
    ) -> Record:
        record = [method, path, query, headers, body, truncated, 0.0, 0]
        self.seen += 1
        if self.records.maxlen:
            self.records.append(record)
        return record

    def clear(self) -> None:
        self.records.clear()
        self.seen = 0

    def select(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """The kept requests as JSON-able dicts, in arrival order, filtered by method/path."""
        wanted_method = method.upper() if method else None
        out = []
        for rec in list(self.records):
            if wanted_method and rec[0] != wanted_method:
                continue
            if path is not None and rec[1] != path:
                continue
            out.append(
                {
                    "method": rec[0],
                    "path": rec[1],
                    "query": rec[2].decode("latin-1"),
                    "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in rec[3]],
                    "body_b64": base64.b64encode(rec[4]).decode(),
                    "body_truncated": rec[5],
                    "delay_ms": rec[6],
                    "status": rec[7],
                }
            )
        return out
