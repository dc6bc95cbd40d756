"""The recording proxy: one ASGI app in front of every real upstream being recorded.

Each upstream gets its own loopback socket; the socket a request came in on
says which upstream it is for (no request chooses a URL). The request goes on
to the real upstream unchanged but for its Host; the answer comes back
unchanged but for hop-by-hop headers, and is kept as an `Exchange` with the
time from sending it to its last byte. What is kept is bounded in count
(`MAX_RECORDED_EXCHANGES` an upstream) and in bytes: only what can be written is
held. A body is kept up to `MAX_RECORDED_BODY` (a longer one is passed on whole but
not kept: its route keeps its status); only the last answer of each method, path and
status can be written, so an earlier one's body and headers are let go when a later
one comes; and bodies and headers held in all stay under `MAX_RECORDED_BYTES` (past
it an answer is kept without its body, or its headers, and counted).
"""

from __future__ import annotations

import dataclasses
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx2

from pytest_fanout.limits import MAX_RECORDED_BODY, MAX_RECORDED_BYTES, MAX_RECORDED_EXCHANGES
from pytest_fanout.record.traffic import Exchange, RecordError

__all__ = ["RecordError", "RecordingProxy", "check_unique", "record_through_proxy"]

#: Exchanges kept per upstream (the oldest are kept; later ones are counted as dropped).
MAX_EXCHANGES = MAX_RECORDED_EXCHANGES
#: Largest request body forwarded (bytes): more is a 413.
MAX_REQUEST_BODY = 16 * 1024 * 1024
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)


class RecordingProxy:
    """ASGI app: forwards to `targets[port]` and records what it saw."""

    def __init__(
        self,
        targets: dict[int, tuple[str, str]],
        timeout_s: float = 60.0,
        max_bytes: int = MAX_RECORDED_BYTES,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        #: local port -> (upstream name, real base URL without a trailing slash)
        self.targets = targets
        self.exchanges: dict[str, list[Exchange]] = {name: [] for name, _ in targets.values()}
        self.dropped = dict.fromkeys(self.exchanges, 0)
        #: Answers kept without their body because the bytes bound was reached.
        self.bodies_dropped = dict.fromkeys(self.exchanges, 0)
        self.timeout_s = timeout_s
        #: Bytes of bodies and headers held (the last answer of each method, path, status).
        self.held_bytes = 0
        self.max_bytes = max_bytes
        #: (upstream, method, path, status) -> index of the one answer that can be written.
        self._last: dict[tuple[str, str, str, int], int] = {}
        self._client: httpx2.AsyncClient | None = None
        #: Told each new (method, path, status) of an upstream as it is recorded (`fanout
        #: record`'s progress: a recording can run for minutes); None: silent.
        self.progress = progress

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        name, base = self.targets[scope["server"][1]]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_REQUEST_BODY:
                await _answer(send, 413, [], b"request body too large to record")
                return
            if not message.get("more_body"):
                break
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        query = scope["query_string"].decode("latin-1")
        url = base + path + (f"?{query}" if query else "")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        assert self._client is not None
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        start = time.perf_counter()
        first_ms: float | None = None
        chunks: list[bytes] = []
        size = 0
        started = False
        try:
            answer = await self._client.send(request, stream=True)
            try:
                kept = tuple((k, v) for k, v in answer.headers.multi_items())
                out = [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in kept
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding"
                ]
                # Passed on as it comes, so a streamed answer stays streamed for the app.
                await send(
                    {"type": "http.response.start", "status": answer.status_code, "headers": out}
                )
                started = True
                async for chunk in answer.aiter_bytes():
                    if first_ms is None and chunk:
                        first_ms = (time.perf_counter() - start) * 1000
                    size += len(chunk)
                    if size <= MAX_RECORDED_BODY:  # more cannot be written: not kept
                        chunks.append(chunk)
                    elif chunks:
                        chunks.clear()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                await answer.aclose()
        except httpx2.HTTPError as exc:
            if not started:
                await _answer(send, 502, [], f"fanout record: {name}: {exc}".encode())
            return  # a broken answer is passed on broken, and not recorded
        latency_ms = (time.perf_counter() - start) * 1000
        await send({"type": "http.response.body", "body": b""})
        content = b"".join(chunks)
        status = answer.status_code
        source = f"{name}: exchange {len(self.exchanges[name]) + self.dropped[name]}"
        exchange = Exchange(
            scope["method"],
            path,
            status,
            kept,
            content,
            latency_ms,
            first_ms,
            source=source,
            body_dropped=size > MAX_RECORDED_BODY,
        )
        self._keep(name, exchange)

    def _keep(self, name: str, exchange: Exchange) -> None:
        """Keep `exchange` within the count and the bytes; let the body and headers of the
        answer it supersedes (same method, path and status: never written) go."""
        kept = self.exchanges[name]
        if len(kept) >= MAX_EXCHANGES:
            self.dropped[name] += 1
            return
        key = (name, exchange.method, exchange.path, exchange.status)
        earlier = self._last.get(key)
        if earlier is not None:
            self.held_bytes -= _size(kept[earlier])
            kept[earlier] = dataclasses.replace(kept[earlier], headers=(), body=b"")
        if self.held_bytes + _size(exchange) > self.max_bytes:
            exchange = dataclasses.replace(exchange, body=b"", body_dropped=True)
            self.bodies_dropped[name] += 1
            if self.held_bytes + _size(exchange) > self.max_bytes:
                exchange = dataclasses.replace(exchange, headers=())
        self.held_bytes += _size(exchange)
        self._last[key] = len(kept)
        kept.append(exchange)
        if earlier is None and self.progress is not None:
            self.progress(
                f"  {name}: {exchange.method} {exchange.path} -> {exchange.status}"
                f" ({len(kept)} exchange(s) recorded)"
            )

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Decoded bodies go back to the app (content-encoding is dropped above).
                self._client = httpx2.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _size(exchange: Exchange) -> int:
    """The bytes an exchange holds that grow with the traffic: body and headers."""
    return len(exchange.body) + sum(len(k) + len(v) for k, v in exchange.headers)


async def _answer(send: Any, status: int, headers: list, body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_unique(upstreams: list[tuple[str, str]]) -> dict[str, str]:
    """NAME -> URL; a name given twice is a RecordError."""
    named: dict[str, str] = {}
    for name, url in upstreams:
        if name in named:
            raise RecordError(f"--upstream {name} is given twice")
        named[name] = url
    return named


class _Stopped(Exception):
    """SIGTERM arrived: stop recording and write what was seen."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def record_through_proxy(
    upstreams: dict[str, str], port: int, progress: Callable[[str], None] | None = None
) -> dict[str, list[Exchange]]:
    """A recording proxy on loopback per upstream (the first on `port`) until Ctrl-C or
    SIGTERM: the exchanges each one saw (each new one told to `progress`). A port that
    cannot be bound is a RecordError."""
    import uvicorn

    from pytest_fanout.servers.process import LOOPBACK, ServerStartError, bind_listening_socket

    sockets: list[socket.socket] = []
    targets = {}
    try:
        for index, (name, url) in enumerate(upstreams.items()):
            sock = bind_listening_socket(LOOPBACK, port if index == 0 else 0)
            sockets.append(sock)
            targets[sock.getsockname()[1]] = (name, url)
    except ServerStartError as exc:
        for sock in sockets:
            sock.close()
        raise RecordError(str(exc)) from None
    proxy = RecordingProxy(targets, progress=progress)
    for local, (name, url) in targets.items():
        print(f"recording {name}: http://{LOOPBACK}:{local} -> {url}", flush=True)
    print("point the app at these URLs; Ctrl-C stops and writes the routes", flush=True)
    config = uvicorn.Config(proxy, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn stops gracefully on SIGINT and SIGTERM, then raises the signal again with the
    # handler that was there before: make SIGTERM's one an exception too, so both write.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run(sockets=sockets)
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for sock in sockets:
            sock.close()
    for name, dropped in proxy.dropped.items():
        if dropped:
            print(f"{name}: {dropped} exchanges over the bound were not kept", file=sys.stderr)
    for name, dropped in proxy.bodies_dropped.items():
        if dropped:
            print(
                f"{name}: {dropped} answers kept without their body (the recorder holds at"
                f" most {proxy.max_bytes // (1024 * 1024)} MiB)",
                file=sys.stderr,
            )
    return proxy.exchanges
