"""Exchanges seen on the wire, turned into stub routes.

One route per method and path: the most frequent status, the last answer
with that status (JSON as `json`, other text as `body`), the response headers
that are neither hop-by-hop nor credentials, and the latency distribution as
`delay_ms` (the median) and `p99_ms` (the 99th percentile, when it is above
the median: the stub then draws log-normal delays with that median and tail).
A route goes into the user's pyproject.toml, so what it keeps passes the one
secret policy (`artifacts`): credential headers dropped, secrets inside the
other headers and in the body (`access_token`, a presigned URL) masked.

Paths that differ only by an id (`/users/17`, `/users/18`) fold into one templated
route (`/users/{id}`), as the stub's call log folds them. Every route is then checked
as the stack will read it (written as TOML and read back, `spec.check_route`, the
stub's `Route.from_spec`), and at most the stub's `MAX_ROUTES` are written: what the
stack would refuse is one `RecordError` line naming the entry it came from.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
import tomllib
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import tomlkit
from tomlkit.exceptions import TOMLKitError

from pytest_fanout.artifacts import mask_data, mask_text, safe_headers
from pytest_fanout.limits import (
    HTTP_METHODS,
    MAX_RECORDED_BODY,
    MAX_RECORDED_DEPTH,
    strict_json_loads,
)
from pytest_fanout.record.spec_file import inline_route
from pytest_fanout.servers.calllog import path_template
from pytest_fanout.servers.routes import MAX_ROUTES, Route
from pytest_fanout.spec import check_route


class RecordError(ValueError):
    """Bad input or a failed step of `fanout record`; `str()` is one line."""


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
#: A path a route can hold (decoded, as the stub matches it: no braces, spaces, ? or #).
_LITERAL_PATH = re.compile(r"^/[^{}?#\s]*$")
#: Bodies longer than this are not written into the spec (a route keeps its status).
MAX_BODY_BYTES = MAX_RECORDED_BODY


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
    #: Where it came from, for messages: "session.har: entry 12", "pricing: exchange 3".
    source: str = ""
    #: The body was longer than a route may hold (or than the recorder's bytes): not kept.
    body_dropped: bool = False


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


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in a JSON value (iterative: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_RECORDED_DEPTH:
                return level  # deep enough to refuse: no need to walk the rest
            stack.extend(
                (v, level + 1) for v in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _answer(exchange: Exchange) -> dict[str, Any]:
    headers = kept_headers(exchange.headers)
    content_type = headers.get("content-type", "")
    body = exchange.body
    if exchange.body_dropped or len(body) > MAX_BODY_BYTES:
        return {"headers": headers} if headers else {}
    if content_type.startswith("text/event-stream"):
        events = mask_data(parse_events(body.decode("utf-8", errors="replace")))
        if events:
            del headers["content-type"]  # what an events= route sends anyway
            return {"events": events, **({"headers": headers} if headers else {})}
    if "json" in content_type or (not content_type and body[:1] in (b"{", b"[")):
        try:
            # No NaN, no Infinity (the stub refuses them); too deep is kept as its text.
            value = strict_json_loads(body)
            if depth(value) > MAX_RECORDED_DEPTH:
                raise ValueError("nested too deeply")
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


def _numbered(base: str) -> Any:
    """A namer of template parameters: {base}, {base2}, {base3}, ..."""
    numbers = itertools.count(1)

    def name(_: Any = None) -> str:
        n = next(numbers)
        return f"{{{base}}}" if n == 1 else f"{{{base}{n}}}"

    return name


def route_path(raw: str) -> str | None:
    """The path a route gets for a path seen on the wire, or None when a route cannot hold
    it. Percent-decoded, as the stub matches (`/caf%C3%A9` is `/café`); a segment the
    secret policy would mask (`sk_live_...`, a JWT) becomes a parameter (`{secret}`), so
    the route matches it and the file never holds it."""
    path = unquote(raw)
    if not _LITERAL_PATH.match(path):
        return None
    name = _numbered("secret")
    return "/".join(name() if s and mask_text(s) != s else s for s in path.split("/"))


def template_of(path: str) -> str:
    """The path with its id segments folded (`servers.calllog.path_template`), each
    parameter named once: "/a/1/b/2" -> "/a/{id}/b/{id2}"."""
    return re.sub(r"\{id\}", _numbered("id"), path_template(path))


def _groups(exchanges: list[Exchange]) -> dict[tuple[str, str], list[Exchange]]:
    """(method, path) -> its exchanges, in the order first seen; literal paths that differ
    only by an id (two or more of them) share one templated path."""
    paths: dict[str, str | None] = {}  # raw path -> its route path (each worked out once)
    valid = []
    for exchange in exchanges:
        if exchange.method.upper() not in HTTP_METHODS:
            continue
        if exchange.path not in paths:
            paths[exchange.path] = route_path(exchange.path)
        path = paths[exchange.path]
        if path is not None:  # a path a route cannot hold is left out
            valid.append((exchange.method.upper(), path, exchange))
    templates = {path: template_of(path) for path in set(paths.values()) if path is not None}
    distinct = {(method, path) for method, path, _ in valid}
    paths_of = Counter((method, templates[path]) for method, path in distinct)
    groups: dict[tuple[str, str], list[Exchange]] = {}
    for method, path, exchange in valid:
        template = templates[path]
        folded = paths_of[(method, template)] > 1
        groups.setdefault((method, template if folded else path), []).append(exchange)
    return groups


def _route(method: str, path: str, seen: list[Exchange]) -> dict[str, Any]:
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
    return route


def check_written(route: dict[str, Any]) -> None:
    """The checks the stack applies when it reads this route: written as TOML (as
    `spec_file` writes it) and read back with tomllib, then `spec.check_route` and the
    stub's `Route.from_spec` (a recorded route has no handler to import). ValueError."""
    try:
        document = tomlkit.document()
        document["route"] = inline_route(route)
        text = tomlkit.dumps(document)
        text.encode()  # the file is UTF-8: a lone surrogate cannot be written
        read = tomllib.loads(text)["route"]
    except (TOMLKitError, RecursionError, UnicodeError) as exc:
        raise ValueError(f"cannot be written as TOML: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"would not read back as TOML: {exc}") from None
    check_route(dict(read))
    Route.from_spec(read)


def _culprit(method: str, path: str, seen: list[Exchange], exc: ValueError) -> RecordError:
    """The error naming the first entry that alone gives a route the stack refuses (the
    one whose answer was kept when none does alone)."""

    def error(exchange: Exchange, reason: ValueError) -> RecordError:
        line = f"{exchange.source} ({method} {exchange.path}): {reason}"
        # Printable whatever the entry held (a lone surrogate would fail the print itself).
        return RecordError(line.encode("utf-8", "backslashreplace").decode("utf-8"))

    for exchange in seen:
        try:
            check_written(_route(method, route_path(exchange.path) or path, [exchange]))
        except ValueError as own:
            return error(exchange, own)
    return error(seen[-1], exc)


def routes_from(exchanges: list[Exchange], upstream: str = "") -> list[dict[str, Any]]:
    """One route (as `route(...)` keyword arguments) per method and path (ids folded), in
    the order they were first seen, each checked as the stack will read it: a RecordError
    naming the entry when the stack would refuse one, or when there are more than the
    stub's MAX_ROUTES."""
    groups = _groups(exchanges)
    if len(groups) > MAX_ROUTES:
        who = f"{upstream}: " if upstream else ""
        raise RecordError(
            f"{who}{len(groups)} routes (ids already folded into templates) is above the "
            f"stub's limit of {MAX_ROUTES} routes an upstream: record fewer paths"
        )
    routes = []
    for (method, path), seen in groups.items():
        route = _route(method, path, seen)
        try:
            check_written(route)
        except ValueError as exc:
            raise _culprit(method, path, seen, exc) from None
        routes.append(route)
    return routes
