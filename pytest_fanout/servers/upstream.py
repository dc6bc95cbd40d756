"""The stub upstream: a raw ASGI app that answers after a delay and counts what it sees.

No framework sits in the hot path, so it is never the bottleneck of a
measurement. Its gauge (requests seen, in flight, PEAK in flight, TCP
connections first used) is what makes concurrency assertions exact instead
of timing guesses. Routes give real answers (`routes.py`; sync handlers run
in a bounded thread pool, `handlers.py`), every call is counted exactly by
method and path (`calls.py`) and kept in a sample bounded by count and bytes
(`recorder.py`), and connections are counted by the stub's own server
(`connections.py`).

Control lives under `/__upstream__/` and needs `Authorization: Bearer
<token>` (403 without); every other path is "an item": a route's answer, or
`{"ok":true}`. Per-request overrides, as query parameters: `delay_ms`,
`status`, `fault` (`drop` closes the connection mid-response).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import os
import random
import secrets
import sys
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from pytest_fanout.limits import (
    HANG_MAX_S,
    MAX_DELAY_MS,
    MAX_ITEM_BODY,
    STUB_ENV_PREFIX,
    Behaviour,
    ConfigError,
    strict_json_dumps,
    strict_json_loads,
)
from pytest_fanout.servers.calllog import CallLog
from pytest_fanout.servers.calls import CallCounter
from pytest_fanout.servers.connections import CONNECTIONS, ConnectionTable
from pytest_fanout.servers.handlers import HandlerPool
from pytest_fanout.servers.hold import Holder, HoldError, HoldSettings
from pytest_fanout.servers.ratelimit import Repeats, TokenBucket
from pytest_fanout.servers.recorder import (
    ABORTED,
    DELAY,
    STATUS,
    Recorder,
)
from pytest_fanout.servers.routes import (
    MAX_ROUTES,
    Route,
    RouteError,
    StubRequest,
    compile_template,
    handler_result,
)
from pytest_fanout.servers.streaming import (
    StreamError,
    StubStream,
    check_handler_stream,
    send_stream,
)

CONTROL_PREFIX = "/__upstream__/"
ITEM_BODY = b'{"ok":true}'
JSON_HEADERS = [(b"content-type", b"application/json")]
#: The variable that hands a stub child its control token (its settings: Behaviour.to_env).
TOKEN_ENV = STUB_ENV_PREFIX + "TOKEN"
#: Largest control request body (bytes): more is a 413.
MAX_CONTROL_BODY = 1024 * 1024
#: z of the 99th percentile of the standard normal distribution.
_Z99 = 2.3263478740408408
_RATE_BODY = b'{"error":{"message":"rate limit exceeded","type":"rate_limit_exceeded"}}'
_CAPPED_BODY = b'{"error":"too many requests in flight"}'
_ITEM_HEADERS = [*JSON_HEADERS, (b"content-length", str(len(ITEM_BODY)).encode())]


@dataclass
class Gauge:
    """What the stub has seen since the last reset.

    A call counts in the gauge that was current when it arrived and ends
    there, so a reset while calls are in flight leaves the new gauge exact."""

    requests: int = 0
    inflight: int = 0
    peak_inflight: int = 0
    completed: int = 0
    #: Answers with an error status, 429 aside.
    errors: int = 0
    #: Every 429, whatever answered it: the rate limit, max_inflight, a route, a handler.
    rejected: int = 0
    #: Of those, the 429s a rate limit sent (the upstream's bucket or a route's).
    limited: int = 0
    #: Of those, the 429s max_inflight sent (too many calls in flight at once).
    capped: int = 0
    dropped: int = 0
    #: Calls whose client went away before its body ended (no answer, never a 200).
    aborted: int = 0
    #: TCP connections whose first item request arrived since the reset.
    connections: int = 0
    #: Calls whose client closed the connection before the answer (a cancelled call).
    cut: int = 0
    #: The delays this stub really applied (ms), summed and the largest: the ideal time.
    delay_ms_sum: float = 0.0
    delay_ms_max: float = 0.0


class Answer(Protocol):
    """Where an item call's answer goes: `reply` sends a whole answer (the server adds
    content-length); `send` is an ASGI send for streamed and cut answers."""

    async def reply(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Send `status`, `headers` and `body` (all of it)."""

    async def send(self, message: dict[str, Any]) -> None:
        """An ASGI `http.response.*` message."""


class AsgiAnswer:
    """An `Answer` over an ASGI `send`: two messages, content-length added."""

    __slots__ = ("send",)

    def __init__(self, send: Any) -> None:
        self.send = send

    async def reply(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if headers is JSON_HEADERS and body is ITEM_BODY:
            headers = _ITEM_HEADERS  # the hot path: built once
        else:
            headers = [*headers, (b"content-length", str(len(body)).encode())]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


class ControlError(Exception):
    """A control request to refuse with `status` and a one-line `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class StubUpstream:
    """The ASGI app. One instance per process; its gauge is exact because the loop is single."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        token: str | None = None,
        connections: ConnectionTable = CONNECTIONS,
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        #: The bearer token of the control paths (a random one when none is given).
        self.token = token or secrets.token_urlsafe(24)
        self._auth = b"Bearer " + self.token.encode()
        self.gauge = Gauge()
        #: Calls in flight now, whatever gauge they count in: caps and "idle" use this.
        self.inflight_now = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self.connections = connections
        self.recorder = Recorder(
            self.behaviour.record_requests,
            self.behaviour.record_body_bytes,
            self.behaviour.record_total_bytes,
        )
        #: Every item call by method and path, exact whatever the recorder keeps.
        self.calls = CallCounter()
        #: Sync handlers run here, off the loop, so a slow one never stalls the others.
        self.handlers = HandlerPool()
        #: When each call came and went, for the waterfall (`calllog.py`).
        self.timeline = CallLog()
        self.routes: list[Route] = []
        self._literal: dict[tuple[str, str], Route] = {}
        #: Routes with path parameters by method, then by the path's first segment: those
        #: that may match a path starting so, in the order they were added (a template's
        #: parameter never spans a '/', so a literal first segment must be equal).
        self._templated: dict[str, dict[str, list[Route]]] = {}
        #: By method: those whose first segment has a parameter (for any other path).
        self._templated_any: dict[str, list[Route]] = {}
        self._random = random.Random(self.behaviour.seed or None)
        #: Hold mode (`hold.py`): when armed, calls wait for their wave instead of the delay.
        self.holder = Holder()
        #: Hung calls (`hang`), by id of their log entry: let go when the client goes away.
        self._hung: dict[int, asyncio.Future[bool]] = {}
        self.hung_now = 0
        #: The upstream's rate limit (`rate_limit`, `burst`) and the routes' own, by route:
        #: `limited` is False when there is none (the hot path checks only that).
        self.bucket: TokenBucket | None = None
        self.route_buckets: dict[int, TokenBucket] = {}
        self.limited = False
        self._set_bucket()
        #: Repeated calls and retries since the last reset (`ratelimit.py`).
        self.repeats = Repeats()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"].startswith(CONTROL_PREFIX):
                await self._control(scope, receive, send)
            else:
                await self._item(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def shutdown(self) -> None:
        """The server stops: the handlers' threads end."""
        self.handlers.shutdown()

    # ---- items --------------------------------------------------------------------------

    def _count(self, method: str, path: str, peer: Any) -> Gauge:
        """An item call arrived (its head): counted in the gauge current now, returned."""
        gauge = self.gauge
        gauge.requests += 1
        if self.connections.first_use(peer):
            gauge.connections += 1
        self.calls.add(method, path)
        return gauge

    async def _item(self, scope: dict, receive: Any, send: Any) -> None:
        method, path, peer = scope["method"], scope["path"], scope.get("client")
        gauge = self._count(method, path, peer)
        try:
            body, complete = await self._read_item_body(receive)
        except ControlError as exc:
            gauge.errors += 1
            await _reply(send, exc.status, _detail(str(exc)))
            return
        query_string, headers = scope["query_string"], scope["headers"]
        out = AsgiAnswer(send)
        await self._serve(gauge, method, path, query_string, headers, peer, body, complete, out)

    async def serve_item(
        self,
        method: str,
        path: str,
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        peer: Any,
        body: bytes,
        out: Answer,
        *,
        complete: bool = True,
        too_large: bool = False,
    ) -> None:
        """An item call from a server that parsed the request itself (`stubhttp.py`): the
        same work as through ASGI, without its scope and messages. `complete` False: the
        client went away before the body ended; `too_large`: the body passed MAX_ITEM_BODY."""
        gauge = self._count(method, path, peer)
        if too_large:
            gauge.errors += 1
            detail = _detail(f"request body over {MAX_ITEM_BODY} bytes")
            await out.reply(413, JSON_HEADERS, detail)
            return
        await self._serve(gauge, method, path, query_string, headers, peer, body, complete, out)

    async def _serve(
        self,
        gauge: Gauge,
        method: str,
        path: str,
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        peer: Any,
        body: bytes,
        complete: bool,
        out: Answer,
    ) -> None:
        """An item call whose body came (or `complete` False: its client went away first)."""
        cap = self.recorder.max_body
        truncated = len(body) > cap
        record = self.recorder.add(
            method, path, query_string, headers, body[:cap] if truncated else body, truncated
        )
        if not complete:
            # The client went away mid-body: no answer, never a complete 200.
            record[ABORTED] = True
            gauge.aborted += 1
            return
        call = self.timeline.arrive(method, path, query_string, body)
        self.repeats.arrive(call)
        if self.limited:
            over = self._over_limit(method, path)
            if over is not None:  # answered at once, without the route's delay
                bucket, wait_s = over
                gauge.rejected += 1
                gauge.limited += 1
                record[STATUS] = 429
                await self._respond(
                    out, call, 429, [*JSON_HEADERS, *bucket.headers(wait_s)], _RATE_BODY
                )
                self.timeline.answer(call, 429)
                return
        if self.behaviour.max_inflight and self.inflight_now >= self.behaviour.max_inflight:
            gauge.rejected += 1
            gauge.capped += 1
            record[STATUS] = 429
            await self._respond(out, call, 429, JSON_HEADERS, _CAPPED_BODY)
            self.timeline.answer(call, 429)
            return
        gauge.inflight += 1
        self.inflight_now += 1
        if gauge.inflight > gauge.peak_inflight:
            gauge.peak_inflight = gauge.inflight
        self.connections.watch(peer, lambda: self._cut(call, gauge))
        try:
            await self._answer(out, query_string, headers, method, path, body, record, gauge, call)
        finally:
            self.connections.unwatch(peer)
            self.timeline.answer(call, record[STATUS])
            if record[STATUS] == 429:  # a route's status or a handler's: rejected too
                gauge.rejected += 1
            gauge.inflight -= 1  # the gauge it started in, not the current one
            self.inflight_now -= 1
            if not self.inflight_now and self._idle_waiters:
                for waiter in self._idle_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._idle_waiters.clear()

    def _over_limit(self, method: str, path: str) -> tuple[TokenBucket, float] | None:
        """(the bucket, the seconds until it has a token) when this call is past a rate
        limit: its route's, then the upstream's; None when it may go on. A call takes a
        token of each limit it passes. Not while the held probe holds calls (it measures
        the code's structure, which refusals would cut short)."""
        if self.holder.armed:
            return None
        if self.route_buckets:
            route, _ = self._find(method, path)
            bucket = self.route_buckets.get(id(route)) if route is not None else None
            if bucket is not None:
                wait_s = bucket.take()
                if wait_s:
                    return bucket, wait_s
        bucket = self.bucket
        if bucket is not None:
            wait_s = bucket.take()
            if wait_s:
                return bucket, wait_s
        return None

    def _set_bucket(self) -> None:
        """The upstream's bucket from its behaviour (full), and whether any limit is set."""
        behaviour = self.behaviour
        rate = behaviour.rate_limit
        self.bucket = TokenBucket(rate, behaviour.burst) if rate else None
        self.limited = self.bucket is not None or bool(self.route_buckets)

    def limits(self) -> dict[str, Any]:
        """The limits in force: the upstream's and each route's ("GET /x"), for messages."""
        found: dict[str, Any] = {"max_inflight": self.behaviour.max_inflight}
        if self.bucket is not None:
            found.update(self.bucket.describe())
        routes = {
            f"{r.method} {r.path}": self.route_buckets[id(r)].describe()
            for r in self.routes
            if id(r) in self.route_buckets
        }
        if routes:
            found["routes"] = routes
        return found

    def _cut(self, call: list, gauge: Gauge) -> None:
        """The client closed the connection of an unanswered call (a cancelled task, a
        timeout): the call ends here, and a hung one is let go."""
        if self.timeline.cut(call):
            gauge.cut += 1
        hung = self._hung.pop(id(call), None)
        if hung is not None and not hung.done():
            hung.set_result(False)

    async def _hang(self, call: list) -> bool:
        """Hold a call of a hung route or upstream until its client goes away (`_cut`), the
        harness releases it (True: answer it), or HANG_MAX_S."""
        if call[9]:
            return False  # its client already went away
        waiter = asyncio.get_running_loop().create_future()
        self._hung[id(call)] = waiter
        self.hung_now += 1
        try:
            return await asyncio.wait_for(waiter, HANG_MAX_S) is True
        except TimeoutError:
            return True
        finally:
            self._hung.pop(id(call), None)
            self.hung_now -= 1

    async def _release_hung(self, query: dict, body: Any) -> dict[str, Any]:
        held = [w for w in self._hung.values() if not w.done()]
        for waiter in held:
            waiter.set_result(True)
        return {"released": len(held)}

    async def _read_item_body(self, receive: Any) -> tuple[bytes, bool]:
        """(body as received, whether it came whole: False when the client disconnected
        before its end)."""
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        body = message.get("body", b"")
        if message.get("more_body"):
            chunks = [body]
            size = len(body)
            while message.get("more_body"):
                message = await receive()
                if message["type"] == "http.disconnect":
                    return b"".join(chunks), False
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_ITEM_BODY:
                    raise ControlError(413, f"request body over {MAX_ITEM_BODY} bytes")
                chunks.append(chunk)
            body = b"".join(chunks)
        return body, True

    async def _respond(
        self, out: Answer, call: list, status: int, headers: list, body: bytes
    ) -> None:
        """A whole answer at once (not a stream): stamped in the call log as it is handed
        over, before the client can read it."""
        self.timeline.stamp(call, status, headers)
        await out.reply(status, headers, body)

    async def _answer(
        self,
        out: Answer,
        raw_query: bytes,
        request_headers: list[tuple[bytes, bytes]],
        method: str,
        path: str,
        body: bytes,
        record: list,
        gauge: Gauge,
        call: list,
    ) -> None:
        behaviour = self.behaviour
        query = dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {}
        route, params = self._find(method, path)
        try:
            delay_ms = self._delay(route, query)
            forced = _query_number(query, "status", 100, 599) if query else None
        except ControlError as exc:
            gauge.errors += 1
            record[STATUS] = 422
            await self._respond(out, call, 422, JSON_HEADERS, _detail(str(exc)))
            return
        delay_ms = self.timeline.plan(call, route.path if route else None, delay_ms)
        record[DELAY] = delay_ms
        if self.holder.armed and await self.holder.hold():
            record[DELAY] = 0.0  # answered when its wave was released, not after a delay
            delay_ms = 0.0
        if route.hang if route is not None and route.hang else behaviour.hang:
            record[DELAY] = 0.0
            if await self._hang(call):
                gauge.errors += 1
                record[STATUS] = 504
                detail = _detail("a hung call, released by the harness")
                await self._respond(out, call, 504, JSON_HEADERS, detail)
            return
        gauge.delay_ms_sum += delay_ms
        if delay_ms > gauge.delay_ms_max:
            gauge.delay_ms_max = delay_ms
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        dropping = query.get("fault") == "drop" or self._chance(behaviour.drop_rate)
        streamed = route is not None and route.stream is not None and route.function is None
        if dropping and not streamed:
            gauge.dropped += 1
            await _drop(self.timeline.stamping(call, out.send))
            return
        error_rate = behaviour.error_rate
        if route is not None and route.error_rate is not None:
            error_rate = route.error_rate
        if error_rate and self._chance(error_rate):
            status, headers, answer = behaviour.error_status, JSON_HEADERS, ITEM_BODY
        elif route is None:
            status, headers, answer = 200, JSON_HEADERS, ITEM_BODY
        elif route.function is not None:
            outcome = await self._run_handler(
                route, request_headers, method, path, params, query, body
            )
            if isinstance(outcome, StubStream):
                send = self.timeline.stamping(call, out.send)
                await self._stream(send, route, outcome, forced, record, gauge, dropping)
                return
            status, headers, answer = outcome
        elif streamed:
            send = self.timeline.stamping(call, out.send)
            await self._stream(send, route, None, forced, record, gauge, dropping)
            return
        else:
            status = route.status
            headers = route.wire_headers
            answer = route.static_answer(params)
        if route is not None and self.timeline.perturb:
            answer = self.timeline.shape(call, answer)
        if forced is not None:
            status = int(forced)
        if status >= 400 and status != 429:  # a 429 counts as rejected (`_item`)
            gauge.errors += 1
        record[STATUS] = status
        await self._respond(out, call, status, headers, answer)
        gauge.completed += 1

    async def _run_handler(
        self,
        route: Route,
        request_headers: list[tuple[bytes, bytes]],
        method: str,
        path: str,
        params: dict[str, str],
        query: dict[str, str],
        body: bytes,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | StubStream:
        request = StubRequest(
            method=method,
            path=path,
            path_params=params,
            query=query,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in request_headers},
            body=body,
        )
        assert route.function is not None
        if asyncio.current_task() is None:
            # Run by a server that begins each call outside a task (`stubhttp.py`): the
            # user's code goes on in one, so `asyncio.timeout()` and the like work there.
            await asyncio.sleep(0)
        try:
            if route.is_async:
                result = await route.function(request)
            else:
                result = await self.handlers.run(route.function, request)
                if asyncio.iscoroutine(result):
                    result = await result
            if isinstance(result, StubStream):
                return result
            return handler_result(result)
        except Exception as exc:
            print(
                f"stub upstream: handler {route.handler} raised on {method} {path}: "
                f"{type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            traceback.print_exc(file=sys.stderr)
            detail = f"handler {route.handler} raised {type(exc).__name__}: {exc}"
            return 500, JSON_HEADERS, _detail(detail)

    async def _stream(
        self,
        send: Any,
        route: Route,
        source: StubStream | None,
        forced: float | None,
        record: list,
        gauge: Gauge,
        drop: bool,
    ) -> None:
        """A streamed answer (streaming.py): in flight, and its record's status 0, until
        the last byte."""
        try:
            plan = route.stream if source is None else check_handler_stream(source, route.stream)
        except StreamError as exc:
            gauge.errors += 1
            record[STATUS] = 500
            await _reply(send, 500, _detail(f"handler {route.handler}: {exc}"))
            return
        assert plan is not None
        status = source.status if source is not None else route.status
        extra = source.headers.items() if source is not None else ()
        headers = [*route.headers, *((k.lower().encode(), str(v).encode()) for k, v in extra)]
        if forced is not None:
            status = int(forced)
        try:
            finished = await send_stream(send, status, headers, plan, source, drop=drop)
        except Exception as exc:  # the handler's iterable raised mid-stream: the cut stays
            gauge.dropped += 1
            print(
                f"stub upstream: stream of {route.method} {route.path} raised "
                f"{type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            return
        if not finished:
            gauge.dropped += 1
            return
        if status >= 400 and status != 429:  # a 429 counts as rejected (`_item`)
            gauge.errors += 1
        record[STATUS] = status
        gauge.completed += 1

    def _find(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        if not self.routes:
            return None, {}
        route = self._literal.get((method, path))
        if route is not None:
            return route, {}
        if method == "HEAD":  # a HEAD matches GET routes too, literal ones included
            for route in self.routes:
                params = route.match(method, path)
                if params is not None:
                    return route, params
            return None, {}
        by_head = self._templated.get(method)
        if by_head is None:
            return None, {}
        end = path.find("/", 1)
        candidates = by_head.get(path[1:end] if end > 0 else path[1:])
        if candidates is None:
            candidates = self._templated_any[method]
        for route in candidates:  # the hot path: one regex each
            found = route.regex.match(path)  # type: ignore[union-attr]
            if found is not None:
                return route, found.groupdict()
        return None, {}

    def _delay(self, route: Route | None, query: dict[str, str]) -> float:
        """This call's delay in ms: the query's, else the route's, else the behaviour's."""
        if query:
            override = _query_number(query, "delay_ms", 0, MAX_DELAY_MS)
            if override is not None:
                return override
        behaviour = self.behaviour
        delay, jitter, p99 = behaviour.delay_ms, behaviour.jitter_ms, behaviour.p99_ms
        if route is not None:
            if route.delay_ms is not None:
                delay = route.delay_ms
            if route.jitter_ms is not None:
                jitter = route.jitter_ms
            if route.p99_ms is not None:
                p99 = route.p99_ms
        if p99 and delay > 0 and p99 > delay:
            sigma = math.log(p99 / delay) / _Z99
            delay = min(self._random.lognormvariate(math.log(delay), sigma), MAX_DELAY_MS)
        if jitter:
            delay += self._random.uniform(0, jitter)
        return delay

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    # ---- control ------------------------------------------------------------------------

    def _authorised(self, scope: dict) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self._auth)
        return False

    async def _control(self, scope: dict, receive: Any, send: Any) -> None:
        if not self._authorised(scope):
            await _reply(send, 403, _detail("control paths need 'Authorization: Bearer <token>'"))
            return
        action = scope["path"][len(CONTROL_PREFIX) :].strip("/")
        method = scope["method"]
        raw_query = scope["query_string"]
        query = dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {}
        try:
            handler = self._CONTROL.get((action, method))
            if handler is None:
                raise ControlError(404, "unknown control path or method")
            body = await _control_body(scope, receive) if method == "POST" else None
            answer = await handler(self, query, body)
        except ControlError as exc:
            await _reply(send, exc.status, _detail(str(exc)))
            return
        except (ConfigError, RouteError, HoldError, ValueError) as exc:
            await _reply(send, 422, _detail(str(exc)))
            return
        await _reply(send, 200, strict_json_dumps(answer))

    async def _stats(self, query: dict, body: Any) -> dict[str, Any]:
        # Connections the app closed before it answered (so before this request came) may
        # have their end still queued in this loop iteration: let it run first.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return self.stats()

    async def _reset(self, query: dict, body: Any) -> dict[str, Any]:
        """Zero the gauge; with ?wait_idle_s=S first wait (bounded) for calls in flight."""
        busy, idle = await self._wait_idle(_query_number(query, "wait_idle_s", 0, 3600) or 0.0)
        self.gauge = Gauge()
        self.repeats = Repeats()
        for bucket in (self.bucket, *self.route_buckets.values()):
            if bucket is not None:
                bucket.refill()  # each sample starts with every bucket full
        self.connections.new_epoch()
        return {**self.stats(), "in_flight_before": busy, "idle": idle}

    async def _wait_idle(self, wait_s: float) -> tuple[int, bool]:
        """Wait (at most `wait_s`) until no call is in flight: (calls in flight before,
        whether none is now)."""
        busy = self.inflight_now
        if busy and wait_s > 0:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, wait_s)
        return busy, not self.inflight_now

    async def _get_config(self, query: dict, body: Any) -> dict[str, Any]:
        return asdict(self.behaviour)

    async def _set_config(self, query: dict, body: Any) -> dict[str, Any]:
        self._configure(_object(body))
        return asdict(self.behaviour)

    def _configure(self, changes: dict[str, Any]) -> None:
        self.behaviour.update(changes)
        behaviour = self.behaviour
        if "seed" in changes:
            self._random.seed(behaviour.seed or None)
        self.recorder.resize(
            behaviour.record_requests, behaviour.record_body_bytes, behaviour.record_total_bytes
        )
        if "rate_limit" in changes or "burst" in changes:
            self._set_bucket()

    async def _restore(self, query: dict, body: Any) -> dict[str, Any]:
        """Behaviour back to `body` (the initial one), no routes, no recorded requests."""
        changes = _object(body)
        Behaviour().update(changes)  # validate before touching anything
        self._configure(changes)
        self._set_routes([])
        self.recorder.clear()
        self.timeline.configure({"extra_ms": 0, "extra_routes": {}, "perturb": False})
        self.calls.clear()
        self.holder.disarm()
        return asdict(self.behaviour)

    async def _get_routes(self, query: dict, body: Any) -> list[dict[str, Any]]:
        return [{"method": r.method, "path": r.path, "handler": r.handler} for r in self.routes]

    async def _add_route(self, query: dict, body: Any) -> list[dict[str, Any]]:
        route = Route.from_spec(_object(body))
        kept = [r for r in self.routes if (r.method, r.path) != (route.method, route.path)]
        if len(kept) >= MAX_ROUTES:
            raise RouteError(f"an upstream holds at most {MAX_ROUTES} routes")
        self._set_routes([*kept, route])
        return await self._get_routes(query, body)

    async def _clear_routes(self, query: dict, body: Any) -> list[dict[str, Any]]:
        self._set_routes([])
        return []

    def _set_routes(self, routes: list[Route]) -> None:
        self.routes = routes
        self._literal = {}
        self.route_buckets = {
            id(r): TokenBucket(r.rate_limit, r.burst or 0) for r in routes if r.rate_limit
        }
        self.limited = self.bucket is not None or bool(self.route_buckets)
        templated: dict[str, list[Route]] = {}
        for route in routes:
            if route.regex is None:
                self._literal.setdefault((route.method, route.path), route)
            else:
                templated.setdefault(route.method, []).append(route)
        self._templated = {}
        self._templated_any = {}
        for method, group in templated.items():
            pairs = [(r.path[1:].split("/", 1)[0], r) for r in group]
            fixed = {head for head, _ in pairs if "{" not in head}
            self._templated[method] = {
                head: [r for h, r in pairs if h == head or "{" in h] for head in fixed
            }
            self._templated_any[method] = [r for h, r in pairs if "{" in h]

    async def _requests(self, query: dict, body: Any) -> dict[str, Any]:
        """One page of the recorded sample: ?method=&path= (a template is fine), after the
        sequence number ?after= and up to ?upto= (the `seen` of a reader's first page)."""
        after = int(_query_number(query, "after", 0, 2**63 - 1) or 0)
        upto = _query_number(query, "upto", 0, 2**63 - 1)
        path, matches = _path_filter(query.get("path"))
        return self.recorder.page(
            after, query.get("method"), path, matches, None if upto is None else int(upto)
        )

    async def _count_calls(self, query: dict, body: Any) -> dict[str, Any]:
        """Exact calls by ?method=&path= (a template is fine), from the counter, not the
        sample; with what the sample holds, so a reader can say when it is one."""
        path, matches = _path_filter(query.get("path"))
        if path is not None:
            matches = path.__eq__
        counted = self.calls.count(query.get("method"), matches)
        return {
            **counted,
            "kept": len(self.recorder.records),
            "record_requests": self.recorder.max_records,
        }

    async def _clear_requests(self, query: dict, body: Any) -> dict[str, Any]:
        self.recorder.clear()
        self.calls.clear()
        return {"requests": [], "seen": 0}

    async def _late(self, query: dict, body: Any) -> dict[str, Any]:
        """?since=&after=&grace_s=&wait_idle_s=: once no call is in flight (waited for at
        most wait_idle_s), how many calls from `since` ran past `after` + `grace_s`
        (`CallLog.late`): a request's orphans, or its work after the caller hung up."""
        since = _query_number(query, "since", 0, math.inf) or 0.0
        after = _query_number(query, "after", 0, math.inf) or 0.0
        grace = _query_number(query, "grace_s", 0, 3600) or 0.0
        busy, idle = await self._wait_idle(_query_number(query, "wait_idle_s", 0, 3600) or 0.0)
        return {**self.timeline.late(since, after, grace), "in_flight_before": busy, "idle": idle}

    async def _get_timeline(self, query: dict, body: Any) -> dict[str, Any]:
        since = _query_number(query, "since", 0, math.inf)
        until = _query_number(query, "until", 0, math.inf)
        return {"calls": self.timeline.select(since, until), "seen": self.timeline.seen}

    async def _set_timeline(self, query: dict, body: Any) -> dict[str, Any]:
        return self.timeline.configure(_object(body))

    async def _clear_timeline(self, query: dict, body: Any) -> dict[str, Any]:
        self.timeline.clear()
        return {"calls": [], "seen": 0}

    async def _arm_hold(self, query: dict, body: Any) -> dict[str, Any]:
        return self.holder.arm(HoldSettings.from_json(body))

    async def _hold_report(self, query: dict, body: Any) -> dict[str, Any]:
        return self.holder.report()

    async def _disarm_hold(self, query: dict, body: Any) -> dict[str, Any]:
        return self.holder.disarm()

    _CONTROL = {
        ("stats", "GET"): _stats,
        ("reset", "POST"): _reset,
        ("config", "GET"): _get_config,
        ("config", "POST"): _set_config,
        ("restore", "POST"): _restore,
        ("routes", "GET"): _get_routes,
        ("routes", "POST"): _add_route,
        ("routes", "DELETE"): _clear_routes,
        ("requests", "GET"): _requests,
        ("requests", "DELETE"): _clear_requests,
        ("timeline", "GET"): _get_timeline,
        ("timeline", "POST"): _set_timeline,
        ("timeline", "DELETE"): _clear_timeline,
        ("late", "GET"): _late,
        ("hung", "DELETE"): _release_hung,
        ("calls", "GET"): _count_calls,
        ("hold", "POST"): _arm_hold,
        ("hold", "GET"): _hold_report,
        ("hold", "DELETE"): _disarm_hold,
    }

    def stats(self) -> dict[str, Any]:
        return {
            **asdict(self.gauge),
            **self.repeats.stats(),
            "limits": self.limits(),
            "inflight_now": self.inflight_now,
            #: Calls a hung route or upstream holds now.
            "hung_now": self.hung_now,
            "connections_open": len(self.connections.open),
            #: Connections first used since the reset that have closed since.
            "connections_closed": self.connections.closed_in_epoch,
            "connections_accepted": self.connections.accepted,
            #: Connections an item call used that are open now, from any sample.
            "connections_live": self.connections.live(),
        }


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ControlError(422, "the body must be a JSON object")
    return body


def _path_filter(raw: str | None) -> tuple[str | None, Any]:
    """(exact path, None) for a literal path, (None, regex.match) for a template."""
    if raw is None:
        return None, None
    try:
        regex, _ = compile_template(raw)
    except RouteError as exc:
        raise ControlError(422, str(exc)) from None
    return (raw, None) if regex is None else (None, regex.match)


def _query_number(query: dict[str, str], name: str, low: float, high: float) -> float | None:
    """A number from the query string, finite and in [low, high], or a 422."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ControlError(422, f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ControlError(
            422, f"{name}={raw!r} must be a finite number from {low:.0f} to {high:.0f}"
        )
    return value


def _detail(text: str) -> bytes:
    return json.dumps({"detail": text}).encode()


async def _control_body(scope: dict, receive: Any) -> Any:
    """The JSON body of a control request: capped (413), strict (no NaN), not too deep."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_CONTROL_BODY:
            raise ControlError(413, f"control body over {MAX_CONTROL_BODY} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_CONTROL_BODY:
            raise ControlError(413, f"control body over {MAX_CONTROL_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return strict_json_loads(raw)
    except ValueError as exc:
        raise ControlError(422, f"the body is not valid JSON: {exc}") from None


async def _reply(send: Any, status: int, body: bytes) -> None:
    if body is ITEM_BODY:
        headers = _ITEM_HEADERS  # the hot path: built once
    else:
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Any) -> None:
    """Promise a body, send half of it, then return: uvicorn closes the connection and logs
    one line ("ASGI callable returned without completing response"), not a traceback."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*JSON_HEADERS, (b"content-length", b"100")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"ok":', "more_body": True})


def app_from_env() -> StubUpstream:
    """Factory for a child process: behaviour from PYTEST_FANOUT_STUB_* variables, the token
    from PYTEST_FANOUT_STUB_TOKEN."""
    return StubUpstream(Behaviour.from_env(), token=os.environ.get(TOKEN_ENV) or None)
