"""The stub upstream's memory of what it was asked: a bounded sample, read back in pages.

Each record keeps the method, path, raw query, headers (up to a cap), the
body (up to a cap) and the delay and status the stub chose, in arrival order.
The sample is bounded twice: by count (`max_records`) and by the bytes it
holds, headers included (`max_bytes`); the oldest records go first. So the
memory stays bounded however long the stub runs and however large the
requests are. Reading is paged (`page()`): one reply holds at most
`PAGE_BYTES` of records, so no read builds a reply the size of the sample or
blocks the stub's loop for long. Exact counts never come from here: see
`calls.py`.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import Any

from pytest_fanout.limits import DEFAULT_MAX_BODY, DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS

#: Bytes of headers kept per record (name + value); the rest are dropped and flagged.
MAX_HEADER_BYTES = 64 * 1024
#: Bytes of records one page holds at most (a record larger than this is a page alone).
PAGE_BYTES = 4 * 1024 * 1024
#: Fixed cost counted per record (the list, its tuple pairs, the numbers).
_OVERHEAD = 200

# Indices of a record (a list, so the status can be set once answered).
METHOD, PATH, QUERY, HEADERS, BODY, TRUNCATED, DELAY, STATUS = range(8)
HEADERS_TRUNCATED, ABORTED, SEQ, SIZE = 8, 9, 10, 11
Record = list[Any]


def _kept_headers(headers: list) -> tuple[list, bool, int]:
    """The headers up to MAX_HEADER_BYTES, whether some were dropped, and the bytes kept
    (one pass: this runs on every call the stub answers)."""
    total = 0
    for index, (name, value) in enumerate(headers):
        size = len(name) + len(value)
        if total + size > MAX_HEADER_BYTES:
            return list(headers[:index]), True, total
        total += size
    return headers, False, total


class Recorder:
    """A deque of requests bounded by count and bytes; `page()` reads it, `clear()` forgets."""

    def __init__(
        self,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_body: int = DEFAULT_MAX_BODY,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.max_records = max_records
        self.max_body = max_body
        self.max_bytes = max_bytes
        self.records: deque[Record] = deque()
        #: Bytes the kept records hold (as counted by `_size`).
        self.bytes = 0
        #: Requests seen since the last clear, including those the bounds dropped.
        self.seen = 0

    def resize(self, max_records: int, max_body: int, max_bytes: int | None = None) -> None:
        self.max_records = max_records
        self.max_body = max_body
        if max_bytes is not None:
            self.max_bytes = max_bytes
        self._evict()

    def add(
        self, method: str, path: str, query: bytes, headers: list, body: bytes, truncated: bool
    ) -> Record:
        """Note one request (`body` already cut to `max_body`); returns its record, which the
        stub updates (delay, status) whether or not the sample kept it."""
        self.seen += 1
        kept, cut, header_bytes = _kept_headers(headers)
        size = _OVERHEAD + len(path) + len(query) + len(body) + header_bytes
        record = [method, path, query, kept, body, truncated, 0.0, 0, cut, False, self.seen, size]
        if self.max_records and size <= self.max_bytes:
            self.records.append(record)
            self.bytes += size
            self._evict()
        return record

    def _evict(self) -> None:
        records = self.records
        while records and (len(records) > self.max_records or self.bytes > self.max_bytes):
            self.bytes -= records.popleft()[SIZE]

    def clear(self) -> None:
        self.records.clear()
        self.bytes = 0
        self.seen = 0

    def page(
        self,
        after: int = 0,
        method: str | None = None,
        path: str | None = None,
        matches: Any = None,
        upto: int | None = None,
        page_bytes: int = PAGE_BYTES,
    ) -> dict[str, Any]:
        """The kept requests after sequence number `after` (and up to `upto`, so a reader
        paging under load ends), filtered by method and exact `path` (or `matches(path)`),
        as JSON-able dicts, at most `page_bytes` of them.

        `next` is the sequence number to ask `after=` for the next page, None at the end;
        `kept` and `seen` say how much of what came the sample holds."""
        wanted_method = method.upper() if method else None
        out: list[dict[str, Any]] = []
        used = 0
        next_after = None
        for rec in list(self.records):  # a copy of references: adds during the loop are safe
            if rec[SEQ] <= after:
                continue
            if upto is not None and rec[SEQ] > upto:
                break
            if wanted_method and rec[METHOD] != wanted_method:
                continue
            if path is not None and rec[PATH] != path:
                continue
            if matches is not None and not matches(rec[PATH]):
                continue
            if out and used + rec[SIZE] > page_bytes:
                next_after = out[-1]["seq"]
                break
            used += rec[SIZE]
            out.append(_wire(rec))
        return {
            "requests": out,
            "next": next_after,
            "seen": self.seen,
            "kept": len(self.records),
            "kept_bytes": self.bytes,
        }


def _wire(rec: Record) -> dict[str, Any]:
    return {
        "method": rec[METHOD],
        "path": rec[PATH],
        "query": rec[QUERY].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in rec[HEADERS]],
        "headers_truncated": rec[HEADERS_TRUNCATED],
        "body_b64": base64.b64encode(rec[BODY]).decode(),
        "body_truncated": rec[TRUNCATED],
        "aborted": rec[ABORTED],
        "delay_ms": rec[DELAY],
        "status": rec[STATUS],
        "seq": rec[SEQ],
    }
