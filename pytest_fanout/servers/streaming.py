"""Streamed answers of a stub route: server-sent events or raw chunks, paced.

A route gives the pieces as a list (`events=` or `chunks=`), or its handler
returns a `StubStream` (a list, or any iterable or async iterable it builds).
The stub sends the headers and the first piece after the route's delay (its
time to first byte: `delay_ms`, `p99_ms` and `jitter_ms` as for any route),
then one piece every `chunk_delay_ms`, or at `tokens_per_s` pieces a second,
on an absolute schedule (no drift over a long stream). The call counts as in
flight in the gauge, and its recorded status stays 0, until its last byte.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Pieces a route may list (a handler's iterable is bounded by the same count).
MAX_PIECES = 100_000
#: Longest pause between two pieces (ms), and the fastest pace (pieces a second).
MAX_CHUNK_DELAY_MS = 60_000.0
MAX_TOKENS_PER_S = 1_000_000.0
SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"
CHUNKS_CONTENT_TYPE = b"text/plain; charset=utf-8"
_EVENT_KEYS = {"data", "event", "id", "retry"}


class StreamError(ValueError):
    """A stream setting the stub cannot use; `str()` is one line."""


@dataclass
class StubStream:
    """What a handler returns to stream its answer.

    `events` are server-sent events: a string is an event's data, a dict may
    have `data` (JSON-encoded unless a string), `event`, `id` and `retry`.
    `chunks` are raw pieces (str or bytes). Either may be a list, an iterable
    or an async iterable. The pace left None follows the route's."""

    events: Iterable[Any] | AsyncIterable[Any] | None = None
    chunks: Iterable[Any] | AsyncIterable[Any] | None = None
    chunk_delay_ms: float | None = None
    tokens_per_s: float | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def encode_event(event: Any) -> bytes:
    """One server-sent event, as the wire carries it (ends with a blank line)."""
    if isinstance(event, str):
        fields: Mapping[str, Any] = {"data": event}
    elif isinstance(event, Mapping):
        unknown = sorted(set(event) - _EVENT_KEYS)
        if unknown:
            raise StreamError(f"an event has unknown key(s) {', '.join(map(str, unknown))}")
        fields = event
    else:
        raise StreamError(f"an event must be a string or a dict, not {type(event).__name__}")
    lines = []
    for name in ("event", "id", "retry"):
        if fields.get(name) is not None:
            value = str(fields[name])
            if "\n" in value or "\r" in value:
                raise StreamError(f"an event's {name} has a line break")
            lines.append(f"{name}: {value}")
    data = fields.get("data")
    if data is not None:
        text = data if isinstance(data, str) else _json(data)
        lines += [f"data: {line}" for line in text.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def _json(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StreamError(f"an event's data is not JSON-able: {exc}") from None


def encode_chunk(chunk: Any) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode()
    raise StreamError(f"a chunk must be a string or bytes, not {type(chunk).__name__}")


def _number(name: str, value: Any, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StreamError(f"{name}={value!r} is not a number")
    if not math.isfinite(value) or not 0 <= value <= high:
        raise StreamError(f"{name}={value!r} must be a finite number from 0 to {high:.0f}")
    return float(value)


def interval_s(chunk_delay_ms: float | None, tokens_per_s: float | None) -> float:
    """Seconds between two pieces (0: as fast as the connection takes them)."""
    if chunk_delay_ms is not None and tokens_per_s is not None:
        raise StreamError("give chunk_delay_ms= or tokens_per_s=, not both")
    if tokens_per_s:
        return 1.0 / tokens_per_s
    return (chunk_delay_ms or 0.0) / 1000


@dataclass
class StreamPlan:
    """A route's stream, checked once: its encoded pieces (a route's list) and its pace."""

    sse: bool
    pieces: list[bytes] | None
    chunk_delay_ms: float | None
    tokens_per_s: float | None

    @property
    def content_type(self) -> bytes:
        return SSE_CONTENT_TYPE if self.sse else CHUNKS_CONTENT_TYPE


def plan_from_spec(spec: Mapping[str, Any], *, handler: bool) -> StreamPlan | None:
    """The stream a route's settings ask for; None when it does not stream. A handler's
    route may set only the pace (its StubStream gives the pieces)."""
    events, chunks = spec.get("events"), spec.get("chunks")
    delay = _number("chunk_delay_ms", spec.get("chunk_delay_ms"), MAX_CHUNK_DELAY_MS)
    rate = _number("tokens_per_s", spec.get("tokens_per_s"), MAX_TOKENS_PER_S)
    interval_s(delay, rate)  # refuses both at once
    if events is None and chunks is None:
        if delay is None and rate is None:
            return None
        if not handler:
            raise StreamError("chunk_delay_ms= and tokens_per_s= pace events= or chunks=")
        # The pace alone, kept for the handler's StubStream that sets none (no pieces here).
        return StreamPlan(False, None, delay, rate)
    if events is not None and chunks is not None:
        raise StreamError("give events= or chunks=, not both")
    if handler:
        raise StreamError("a handler streams by returning a StubStream, not with events=/chunks=")
    if spec.get("json") is not None or spec.get("body") is not None:
        raise StreamError("a streamed route has no json= or body=")
    items = events if events is not None else chunks
    if not isinstance(items, list) or not items:
        raise StreamError("events= and chunks= must be non-empty lists")
    if len(items) > MAX_PIECES:
        raise StreamError(f"a stream has at most {MAX_PIECES} pieces")
    encode = encode_event if events is not None else encode_chunk
    return StreamPlan(events is not None, [encode(item) for item in items], delay, rate)


async def _pieces(stream: StubStream) -> AsyncIterator[bytes]:
    items = stream.events if stream.events is not None else stream.chunks
    encode = encode_event if stream.events is not None else encode_chunk
    count = 0
    if isinstance(items, AsyncIterable):
        async for item in items:
            count += 1
            if count > MAX_PIECES:
                raise StreamError(f"a stream has at most {MAX_PIECES} pieces")
            yield encode(item)
        return
    for item in items or ():
        count += 1
        if count > MAX_PIECES:
            raise StreamError(f"a stream has at most {MAX_PIECES} pieces")
        yield encode(item)


def check_handler_stream(stream: StubStream, route_plan: StreamPlan | None) -> StreamPlan:
    """A handler's StubStream as a plan (its pace, else the route's); StreamError if unusable."""
    if (stream.events is None) == (stream.chunks is None):
        raise StreamError("StubStream needs events= or chunks= (one of them)")
    status = stream.status
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise StreamError(f"StubStream.status {status!r} is not an HTTP status")
    delay = _number("chunk_delay_ms", stream.chunk_delay_ms, MAX_CHUNK_DELAY_MS)
    rate = _number("tokens_per_s", stream.tokens_per_s, MAX_TOKENS_PER_S)
    if delay is None and rate is None and route_plan is not None:
        delay, rate = route_plan.chunk_delay_ms, route_plan.tokens_per_s
    interval_s(delay, rate)
    return StreamPlan(stream.events is not None, None, delay, rate)


async def send_stream(
    send: Any,
    status: int,
    headers: list[tuple[bytes, bytes]],
    plan: StreamPlan,
    source: StubStream | None = None,
    *,
    drop: bool = False,
) -> bool:
    """Send the headers and the pieces at the plan's pace; True when the last byte went.

    With `drop`, the connection is cut after the first piece (a stream broken mid-way).
    A handler's iterable that raises ends the stream the same way (the error is raised
    on after the cut, for the stub to log)."""
    wait = interval_s(plan.chunk_delay_ms, plan.tokens_per_s)
    if not any(name == b"content-type" for name, _ in headers):
        headers = [(b"content-type", plan.content_type), *headers]
    headers = [*headers, (b"cache-control", b"no-cache")]
    pieces: AsyncIterator[bytes] | Iterable[bytes]
    if plan.pieces is not None:
        pieces = _aiter(plan.pieces)
    else:
        assert source is not None
        pieces = _pieces(source)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    started = time.perf_counter()
    sent = 0
    async for piece in pieces:
        if sent and wait:
            delay = started + sent * wait - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        sent += 1
        if drop:
            return False
    await send({"type": "http.response.body", "body": b""})
    return True


async def _aiter(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item
