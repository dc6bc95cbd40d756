"""One HTTP request, timed to the first byte of its body as well as to the last.

A streaming endpoint (server-sent events, tokens) is judged by both: a change
that delays the first token is a regression even when the total stays. The
body is read raw as it arrives; the answer is an ordinary `httpx2.Response`
(content decoded as usual) whose `extensions` hold both times, in seconds from
the send.
"""

from __future__ import annotations

import time
from typing import Any

import httpx2

FIRST_BYTE = "fanout.first_byte_s"
LAST_BYTE = "fanout.last_byte_s"


def timed_request(client: httpx2.Client, method: str, url: str, **kwargs: Any) -> httpx2.Response:
    """`client.request(...)`, with FIRST_BYTE and LAST_BYTE in the answer's extensions
    (an empty body's first byte is its last)."""
    request = client.build_request(method, url, **kwargs)
    start = time.perf_counter()
    streamed = client.send(request, stream=True)
    first: float | None = None
    chunks = []
    try:
        for chunk in streamed.iter_raw():
            if first is None and chunk:
                first = time.perf_counter() - start
            chunks.append(chunk)
    finally:
        streamed.close()
    last = time.perf_counter() - start
    return httpx2.Response(
        streamed.status_code,
        headers=streamed.headers,
        content=b"".join(chunks),
        request=request,
        extensions={
            **streamed.extensions,
            FIRST_BYTE: last if first is None else first,
            LAST_BYTE: last,
        },
    )


def first_byte_s(response: httpx2.Response) -> float | None:
    """Seconds from the send to the body's first byte, if `timed_request` sent it."""
    value = response.extensions.get(FIRST_BYTE)
    return float(value) if value is not None else None
