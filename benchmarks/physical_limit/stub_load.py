"""The stub upstream's own throughput: zero delay, one core, keep-alive load from elsewhere.

The stub must never be the bottleneck of a measurement. Load comes from
`STUB_LOAD_PROCESSES` processes (`python -m benchmarks.physical_limit.stub_load
...`) speaking raw HTTP/1.1 over keep-alive connections, pinned to the other
cores; the stub is pinned to one, and its gauge counts what it completed. It
runs as a test uses it: a templated route answers the calls, every call is
recorded and in the call log. `stub_costs` says what each of those costs: the
stub's item path driven in this process as its server calls it (`serve_item`, no
sockets), CPU microseconds per call with everything on and with each one off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.physical_limit.plan import REPO
from benchmarks.procfs import cpu_seconds
from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.stack import StubUpstreamServer
from pytest_fanout.servers.upstream import CONTROL_PREFIX, StubUpstream

STUB_WINDOWS = 5
STUB_WINDOW_S = 1.0
STUB_LOAD_PROCESSES = 2
STUB_LOAD_CONNECTIONS = 32
#: The route that answers the load's calls (as a test declares one), and its answer.
STUB_ROUTE = {"method": "GET", "path": "/items/{i}", "json": {"ok": True, "id": "{i}"}}
#: Calls per in-process measurement of `stub_costs` (a few tenths of a second each).
COST_CALLS = 50_000


class _LoadConnection(asyncio.Protocol):
    """One keep-alive connection that sends the next GET as soon as an answer is complete.

    A raw protocol with no HTTP library: it costs a few microseconds per request,
    so the load processes measure the stub, not themselves.
    """

    def __init__(self, request: bytes, counter: list[int], deadline: float) -> None:
        self.request = request
        self.counter = counter
        self.deadline = deadline
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            self.counter[0] += 1
            if time.monotonic() >= self.deadline:
                self.transport.close()  # type: ignore[union-attr]
                return
            self.transport.write(self.request)  # type: ignore[union-attr]
        self.buffer = buffer


async def _load(port: int, connections: int, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    counter = [0]
    request = f"GET /items/1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    deadline = time.monotonic() + seconds
    for _ in range(connections):
        await loop.create_connection(
            lambda: _LoadConnection(request, counter, deadline), "127.0.0.1", port
        )
    await asyncio.sleep(max(0.0, deadline - time.monotonic()) + 0.1)
    return counter[0]


def stub_throughput(upstream: StubUpstreamServer) -> dict[str, object]:
    """The stub's zero-delay req/s on ONE core (its gauge counts), under keep-alive load,
    with a route, recording and the call log on; the stub is restored after."""
    upstream.configure(delay_ms=0)
    upstream.route(**STUB_ROUTE)
    try:
        return _throughput(upstream)
    finally:
        upstream.restore()


def _throughput(upstream: StubUpstreamServer) -> dict[str, object]:
    assert upstream.pid is not None
    all_cpus = sorted(os.sched_getaffinity(0))
    pinned = len(all_cpus) >= 2
    stub_cpu, load_cpus = (all_cpus[0], all_cpus[1:]) if pinned else (None, all_cpus)
    run_s = STUB_WINDOWS * STUB_WINDOW_S + 1.0
    command = [sys.executable, "-m", __name__, "--port", str(upstream.port)]
    command += ["--connections", str(STUB_LOAD_CONNECTIONS), "--seconds", str(run_s)]
    command += ["--cpus", ",".join(map(str, load_cpus)) if pinned else ""]
    workers: list[subprocess.Popen[str]] = []
    rates: list[float] = []
    per_cpu_s: list[float] = []
    busy: list[float] = []
    pid = upstream.pid
    try:
        if pinned:
            os.sched_setaffinity(pid, {stub_cpu})
        for _ in range(STUB_LOAD_PROCESSES):
            workers.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO))
        time.sleep(0.5)  # connections open, loops warm
        before = upstream.stats()["completed"]
        start, cpu_start = time.perf_counter(), cpu_seconds(pid)
        for _ in range(STUB_WINDOWS):
            time.sleep(STUB_WINDOW_S)
            after = upstream.stats()["completed"]
            now, cpu_now = time.perf_counter(), cpu_seconds(pid)
            rates.append((after - before) / (now - start))
            # Per CPU-second of the stub itself: what one core does for it, even when other
            # processes on this shared machine take turns on that core.
            per_cpu_s.append((after - before) / max(cpu_now - cpu_start, 1e-3))
            busy.append((cpu_now - cpu_start) / (now - start))
            before, start, cpu_start = after, now, cpu_now
        for worker in workers:
            worker.communicate(timeout=run_s + 10)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if pinned:
            os.sched_setaffinity(pid, set(all_cpus))
    return {
        "req_per_s": statistics.median(rates),
        "windows": rates,
        "req_per_cpu_s": statistics.median(per_cpu_s),
        "busy": statistics.median(busy),
        "pinned": pinned,
        "stub_cpu": stub_cpu,
        "load_processes": STUB_LOAD_PROCESSES,
        "connections": STUB_LOAD_PROCESSES * STUB_LOAD_CONNECTIONS,
    }


async def _asgi(app: StubUpstream, method: str, path: str, body: Any = None) -> None:
    """One request to the stub's ASGI app in this process (a control one with its token)."""
    headers = [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer " + app.token.encode())]
    content = json.dumps(body).encode() if body is not None else b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": content, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"stub refused {method} {path}: {message['status']}")

    scope = {"type": "http", "method": method, "path": path, "query_string": b""}
    await app({**scope, "headers": headers, "client": ("127.0.0.1", 1)}, receive, send)


async def _per_call_us(off: str) -> float:
    """CPU microseconds per zero-delay item call of a fresh stub app with `off` switched off."""
    app = StubUpstream(Behaviour(delay_ms=0))
    if off != "route":
        await _asgi(app, "POST", CONTROL_PREFIX + "routes", STUB_ROUTE)
    if off == "recording":
        await _asgi(app, "POST", CONTROL_PREFIX + "config", {"record_requests": 0})
    if off == "call log":
        await _asgi(app, "POST", CONTROL_PREFIX + "timeline", {"max_calls": 0})
    headers = [
        (b"host", b"127.0.0.1:8001"),
        (b"user-agent", b"Python/3.11 aiohttp/3"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
    ]
    calls = [(f"/items/{i % 1000}", ("127.0.0.1", 40_000 + i % 1000)) for i in range(COST_CALLS)]

    class Discard:
        """An Answer that sends nowhere."""

        async def reply(self, status: int, headers: list, body: bytes) -> None:
            return None

        async def send(self, message: dict[str, Any]) -> None:
            return None

    out = Discard()
    for path, peer in calls[:1000]:  # warm
        await app.serve_item("GET", path, b"", headers, peer, b"", out)
    start = time.process_time()
    for path, peer in calls:
        await app.serve_item("GET", path, b"", headers, peer, b"", out)
    return 1e6 * (time.process_time() - start) / COST_CALLS


def stub_costs() -> dict[str, float]:
    """CPU us per call of the stub's own code (`serve_item`, no server, no sockets): with
    everything on, and with the route, recording or the call log off (best of three)."""
    out: dict[str, float] = {}
    for off in ("", "route", "recording", "call log"):
        out[off or "all on"] = min(asyncio.run(_per_call_us(off)) for _ in range(3))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """A load process: bounded by --seconds, pinned to --cpus; prints requests completed."""
    import uvloop

    parser = argparse.ArgumentParser(description="keep-alive load on the stub (a worker)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=STUB_LOAD_CONNECTIONS)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cpus", default="")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    print(uvloop.run(_load(args.port, args.connections, args.seconds)))


if __name__ == "__main__":
    main()
