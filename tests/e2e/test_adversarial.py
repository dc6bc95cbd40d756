"""Rows of the adversarial pass that held, kept holding: a hostile client against the stack.

A 100 MB body, malformed HTTP, thousands of idle connections, a client that
resets mid-request, and CPU hogs on every core: after each, the stub and the
app still answer, and the stub's counts stay exact. (docs/reliability.md's
table lists every row and the test that proves it.)
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import httpx2
import pytest

from pytest_fanout.limits import MAX_ITEM_BODY, Behaviour
from pytest_fanout.measure import measure
from pytest_fanout.measurement import Request
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import Stack
from tests.helpers import wait_until

#: Idle connections opened at once (the pass used 10,000; a CI runner's fd limit is lower).
CONNECTIONS = 2_000


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(behaviour=Behaviour(delay_ms=50)) as running:
        yield running


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.upstream.restore()
    stack.upstream.reset()
    return stack


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _still_exact(stack: Stack) -> None:
    """The app fans out and the stub counts it exactly: nothing was left broken."""
    assert stack.app is not None
    # A raw request the client abandoned may still be in its delay at the stub: let it end.
    assert stack.upstream.reset(wait_idle_s=10)["idle"]
    with httpx2.Client(timeout=30, verify=tls_context()) as client:
        m = measure(
            client,
            stack.app.url,
            Request("/async/10"),
            upstreams=stack.upstreams,
            app=stack.app,
            repeat=2,
            warmup=0,
            n=10,
        )
    assert m.upstream_peak_per_sample == [10, 10]
    assert m.upstream_requests_per_sample == [10, 10]


def test_a_100_mb_body_is_refused_past_the_cap_and_nothing_breaks(fresh: Stack) -> None:
    chunk = b"x" * (1024 * 1024)

    def hundred_mb() -> Iterator[bytes]:
        for _ in range(100):
            yield chunk

    with httpx2.Client(timeout=60, verify=tls_context()) as client:
        try:
            answer = client.post(fresh.upstream.url + "/upload", content=hundred_mb())
            status = answer.status_code
        except httpx2.TransportError:  # the stub answered 413 and closed mid-upload
            status = 413
    assert status == 413
    assert MAX_ITEM_BODY < 100 * 1024 * 1024
    assert fresh.upstream.stats()["errors"] == 1
    _still_exact(fresh)


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 200_000 + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on plain HTTP
    ],
    ids=["garbage", "negative-length", "huge-header", "tls-hello"],
)
def test_malformed_http_is_refused_and_both_servers_keep_serving(fresh: Stack, raw: bytes) -> None:
    assert fresh.app is not None
    for url in (fresh.upstream.url, fresh.app.url):
        with socket.create_connection(_host_port(url), timeout=10) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):  # ends when the server closes
                answer += chunk
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    _still_exact(fresh)


def test_thousands_of_idle_connections_do_not_stall_the_stack(fresh: Stack) -> None:
    assert fresh.app is not None
    socks = []
    try:
        for url in (fresh.app.url, fresh.upstream.url):
            for _ in range(CONNECTIONS // 2):
                socks.append(socket.create_connection(_host_port(url), timeout=10))
        _still_exact(fresh)  # while they are all open
    finally:
        for sock in socks:
            sock.close()


def test_a_client_reset_mid_request_leaves_the_app_healthy(fresh: Stack) -> None:
    assert fresh.app is not None
    for _ in range(20):
        with socket.create_connection(_host_port(fresh.app.url), timeout=10) as sock:
            sock.sendall(b"GET /async/10 HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The app finishes what it admitted (nobody to answer) and releases every call.
    with httpx2.Client(base_url=fresh.app.url, timeout=10, verify=tls_context()) as client:
        wait_until(lambda: client.get("/stats").json()["pending_calls"] == 0, 10, "released")
    _still_exact(fresh)


def test_exact_counts_hold_with_a_cpu_hog_on_every_core(fresh: Stack) -> None:
    """Two processes spin (this runner's cores); the structure counts stay exact."""
    hog = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass\n"
    hogs = [
        subprocess.Popen([sys.executable, "-c", hog], stdin=subprocess.DEVNULL) for _ in range(2)
    ]
    try:
        _still_exact(fresh)
    finally:
        for proc in hogs:
            proc.kill()
            proc.wait()
