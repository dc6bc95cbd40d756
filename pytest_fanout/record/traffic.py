"""Exchanges seen on the wire, turned into stub routes.

One route per method and path: the most frequent status, the last answer
with that status (JSON as `json`, other text as `body`), the response headers
that are neither hop-by-hop nor credentials, and the latency distribution as
`delay_ms` (the median) and `p99_ms` (the 99th percentile, when it is above
the median: the stub then draws log-normal delays with that median and tail).
A route goes into the user's pyproject.toml, so what it keeps passes the one
secret policy (`artifacts`): credential headers dropped, secrets inside the
other headers and in the body (`access_token`, a presigned URL) masked.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pytest_fanout.artifacts import mask_data, mask_text, safe_headers
from pytest_fanout.limits import HTTP_METHODS

#: Response headers never written into a route: the transport's own (credentials are
#: `artifacts.safe_headers`' to drop).
TRANSPORT_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "upgrade",
        "trailer",
        "te",
        "alt-svc",
        "strict-transport-security",
    }
)
#: A path a route holds literally (its raw, percent-encoded form has no braces or spaces).
_LITERAL_PATH = re.compile(r"^/[^{}?#\s]*$")
#: Bodies longer than this are not written into the spec (a route keeps its status).
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Exchange:
    """One request and its answer as seen on the wire."""

    method: str
    path: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: From the request's send to the answer's last byte, in milliseconds.
    latency_ms: float
    #: From the send to the body's first byte (None: not measured, as in a HAR file).
    first_byte_ms: float | None = None


def kept_headers(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The response headers a route may repeat (lower-case names; transport headers and
    credentials dropped, secrets in the values masked)."""
    return safe_headers((k, v) for k, v in headers if k.lower() not in TRANSPORT_HEADERS)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def parse_events(text: str) -> list[Any]:
    """Server-sent events as `route(events=...)` takes them: a bare data string, or a dict
    with `event`, `id`, `retry` and `data` (comments dropped)."""
    events: list[Any] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name in ("event", "id", "retry"):
                fields[name] = value
        if data:
            fields["data"] = "\n".join(data)
        if fields:
            events.append(fields["data"] if list(fields) == ["data"] else fields)
    return events


def _answer(exchange: Exchange) -> dict[str, Any]:
    headers = kept_headers(exchange.headers)
    content_type = headers.get("content-type", "")
    body = exchange.body
    if content_type.startswith("text/event-stream"):
        events = mask_data(parse_events(body.decode("utf-8", errors="replace")))
        if events:
            del headers["content-type"]  # what an events= route sends anyway
            return {"events": events, **({"headers": headers} if headers else {})}
    if len(body) > MAX_BODY_BYTES:
        return {"headers": headers} if headers else {}
    if "json" in content_type or (not content_type and body[:1] in (b"{", b"[")):
        try:
            value = json.loads(body)
        except ValueError:
            pass
        else:
            if content_type == "application/json":
                del headers["content-type"]  # what a json= route sends anyway
            return {"json": mask_data(value), **({"headers": headers} if headers else {})}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {"headers": headers} if headers else {}
    return {"body": mask_text(text), **({"headers": headers} if headers else {})}


def routes_from(exchanges: list[Exchange]) -> list[dict[str, Any]]:
    """One route (as `route(...)` keyword arguments) per method and path, in the order
    they were first seen."""
    groups: dict[tuple[str, str], list[Exchange]] = {}
    for exchange in exchanges:
        if exchange.method.upper() not in HTTP_METHODS or not _LITERAL_PATH.match(exchange.path):
            continue  # a path a route cannot hold as it is (braces would make a template)
        groups.setdefault((exchange.method.upper(), exchange.path), []).append(exchange)
    routes = []
    for (method, path), seen in groups.items():
        status = Counter(e.status for e in seen).most_common(1)[0][0]
        last = [e for e in seen if e.status == status][-1]
        route: dict[str, Any] = {"method": method, "path": path, "status": status}
        route.update(_answer(last))
        streamed = "events" in route
        firsts = [e.first_byte_ms for e in seen if e.first_byte_ms is not None]
        # A stream's delay is its time to first byte, then its pace; any other answer's
        # delay is the whole exchange.
        latencies = [
            max(0.0, ms) for ms in (firsts if streamed and firsts else [e.latency_ms for e in seen])
        ]
        median = round(statistics.median(latencies), 1)
        route["delay_ms"] = median
        tail = round(_percentile(latencies, 99), 1)
        if median > 0 and tail > median:
            route["p99_ms"] = tail
        if streamed and firsts and len(route["events"]) > 1:
            gaps = [
                (e.latency_ms - e.first_byte_ms) / (len(route["events"]) - 1)
                for e in seen
                if e.first_byte_ms is not None
            ]
            pace = round(max(0.0, statistics.median(gaps)), 1)
            if pace:
                route["chunk_delay_ms"] = pace
        routes.append(route)
    return routes
