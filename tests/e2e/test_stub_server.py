"""The stub's own HTTP/1.1 server (servers/stubhttp.py) on the wire: what uvicorn did for
it is still done, exactly (pipelining, chunked bodies, hang-ups, connections, signals)."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator

import httpx2
import psutil
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stub_server import StubUpstreamServer
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstreamServer]:
    with StubUpstreamServer(Behaviour(delay_ms=0), name="wire") as server:
        yield server


@pytest.fixture
def fresh(stub: StubUpstreamServer) -> StubUpstreamServer:
    stub.restore()
    stub.reset()
    return stub


def _connect(stub: StubUpstreamServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stub.port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` answers with a content-length from `sock`: (status, body) each, in order."""
    buffer = b""
    answers: list[tuple[int, bytes]] = []
    for _ in range(1000):  # bounded: each pass reads or ends
        while len(answers) < count and b"\r\n\r\n" in buffer:
            head, rest = buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
            length = int(fields[b"content-length"])
            if len(rest) < length:
                break
            answers.append((int(lines[0].split()[1]), rest[:length]))
            buffer = rest[length:]
        if len(answers) == count:
            return answers
        data = sock.recv(65536)
        if not data:
            break
        buffer += data
    raise AssertionError(f"got {len(answers)} of {count} answers; left: {buffer[:200]!r}")


def test_a_pipelined_pair_is_answered_in_order(fresh: StubUpstreamServer) -> None:
    # The first is slower: answered in order all the same (HTTP/1.1 has no other order).
    fresh.route("GET", "/first", json={"n": 1}, delay_ms=150)
    fresh.route("GET", "/second", json={"n": 2})
    with _connect(fresh) as sock:
        sock.sendall(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = _read_answers(sock, 2)
    assert answers == [(200, b'{"n":1}'), (200, b'{"n":2}')]
    stats = fresh.stats()
    assert (stats["requests"], stats["completed"], stats["connections"]) == (2, 2, 1)


def test_a_chunked_post_body_is_recorded_exactly(fresh: StubUpstreamServer) -> None:
    pieces = [b'{"sku": ', b'"a\r\n1"', b", " + b"x" * 5000, b"}"]
    with _connect(fresh) as sock:
        sock.sendall(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n"
        )
        for piece in pieces:  # one write each: the body comes in several reads
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        assert _read_answers(sock, 1) == [(200, b'{"ok":true}')]
    [record] = fresh.requests("POST", "/orders")
    assert record.body == b"".join(pieces)
    assert not record.body_truncated and not record.aborted
    assert record.headers["transfer-encoding"] == "chunked"


def test_expect_100_continue_gets_its_interim_answer(fresh: StubUpstreamServer) -> None:
    with _connect(fresh) as sock:
        sock.sendall(
            b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        assert _read_answers(sock, 1) == [(200, b'{"ok":true}')]
    assert fresh.requests("POST", "/big")[0].body == b"body"


def test_a_client_that_hangs_up_mid_delay_is_counted_cut(fresh: StubUpstreamServer) -> None:
    fresh.route("GET", "/slow", json={"slow": True}, delay_ms=3000)
    with _connect(fresh) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: fresh.stats()["inflight_now"] == 1, 10, "the call in flight")
    # Closed before its answer: the call ends cut, at once, not after its delay.
    wait_until(lambda: fresh.stats()["cut"] == 1, 10, "the call counted cut")
    stats = fresh.stats()
    assert (stats["requests"], stats["cut"], stats["connections"]) == (1, 1, 1)


def test_a_body_cut_by_the_client_is_recorded_aborted(fresh: StubUpstreamServer) -> None:
    with _connect(fresh) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
        wait_until(lambda: fresh.stats()["connections_open"] >= 1, 10, "the connection open")
    wait_until(lambda: fresh.stats()["aborted"] == 1, 10, "the call counted aborted")
    [record] = fresh.requests("POST", "/upload")
    assert record.aborted and record.body == b"half" and record.status == 0
    assert fresh.stats()["completed"] == 0


def test_fifty_keep_alive_clients_are_fifty_connections(fresh: StubUpstreamServer) -> None:
    clients = [
        httpx2.Client(base_url=fresh.url, timeout=10, verify=tls_context()) for _ in range(50)
    ]
    try:
        for round_ in range(3):
            for i, client in enumerate(clients):
                assert client.get(f"/c/{i}/{round_}").status_code == 200
        stats = fresh.stats()
        assert (stats["requests"], stats["connections"]) == (150, 50)
        assert stats["connections_live"] == 50
    finally:
        for client in clients:
            client.close()
    wait_until(lambda: fresh.stats()["connections_closed"] == 50, 10, "50 closed")
    assert fresh.stats()["connections_live"] == 0


def test_a_bad_request_is_a_400_and_the_stub_serves_on(fresh: StubUpstreamServer) -> None:
    with _connect(fresh) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = sock.recv(1000)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert httpx2.get(f"{fresh.url}/after", timeout=10, verify=tls_context()).json() == {"ok": True}


def test_head_gets_the_length_and_no_body(fresh: StubUpstreamServer) -> None:
    with _connect(fresh) as sock:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        for _ in range(100):  # bounded
            data += sock.recv(65536)
            if data.count(b"HTTP/1.1 200") == 2 and data.endswith(b'{"ok":true}'):
                break
    head_answer, get_answer = data.split(b"HTTP/1.1 200")[1:]
    assert b"content-length: 11\r\n" in head_answer and head_answer.endswith(b"\r\n\r\n")
    assert get_answer.endswith(b'{"ok":true}')


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_stub_with_a_call_in_flight_and_leaves_no_process(
    signum: signal.Signals,
) -> None:
    with StubUpstreamServer(Behaviour(delay_ms=30_000)) as server:
        assert server.proc is not None
        process = psutil.Process(server.proc.pid)
        outcome: list[object] = []

        def call() -> None:
            try:
                outcome.append(
                    httpx2.get(f"{server.url}/held", timeout=20, verify=tls_context()).status_code
                )
            except httpx2.TransportError as exc:
                outcome.append(type(exc).__name__)

        caller = threading.Thread(target=call)
        caller.start()
        wait_until(lambda: server.stats()["inflight_now"] == 1, 10, "the call in flight")
        children = process.children(recursive=True)
        server.proc.send_signal(signum)
        # Graceful: the call in flight gets its grace (2 s), then the process ends by itself.
        assert server.proc.wait(timeout=15) == 0
        caller.join(timeout=20)
        assert outcome and outcome[0] != 200  # cut, not answered after its 30 s
        assert not psutil.pid_exists(process.pid) or process.status() == psutil.STATUS_ZOMBIE
        assert not any(child.is_running() for child in children)
