"""The one --host check (pytest_fanout/load/target.py) that Locust and `fanout capacity`
both make: a host that answers anything is there, a self-signed TLS host included; one
that does not is one line naming the host and the cause. Loopback servers in threads."""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pytest_fanout.load.capacity import path_problem
from pytest_fanout.load.target import NoAnswer, first_answer, host_problem


class _Handler(http.server.BaseHTTPRequestHandler):
    """200 on /, 302 to a closed port on /away, 404 elsewhere, 500 on /broken."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/")
        elif self.path in ("/", "/broken"):
            self.send_response(200 if self.path == "/" else 500)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _server(context: ssl.SSLContext | None = None) -> Iterator[int]:
    """A loopback HTTP server (TLS with `context`) in a thread; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost signed by its own key (cryptography, else openssl)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("needs the cryptography package or the openssl command to make a cert")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
            + ["-nodes", "-days", "1", "-subj", "/CN=localhost"]
            + ["-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once closed


def test_a_self_signed_tls_host_is_there_for_the_host_check_and_the_path_check(
    tmp_path: Path,
) -> None:
    """Locust's FastHttpUser loads a host whose certificate does not verify; so the check
    before `fanout capacity` and Locust must not refuse it (httpx2 with verification did:
    `does not answer: ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED]`)."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with _server(context) as port:
        host = f"https://127.0.0.1:{port}"
        assert host_problem(host) == ""
        assert first_answer(host + "/broken") == (500, "Internal Server Error")
        assert path_problem(host, "/") == ""
        assert path_problem(host, "/nowhere") == (
            f"GET /nowhere at {host} answers 404 Not Found: "
            "every request of the search would fail; check --path"
        )


def test_any_status_is_an_answer_and_a_redirect_is_not_followed() -> None:
    with _server() as port:
        host = f"http://127.0.0.1:{port}"
        assert first_answer(host + "/broken") == (500, "Internal Server Error")
        assert first_answer(host + "/away") == (302, "Found")  # its target is closed
        assert host_problem(host + "/away") == host_problem(host + "/broken") == ""


def test_https_to_a_plain_http_server_is_there() -> None:
    """A TLS handshake that fails on the server's side: something answered at that port."""
    with _server() as port:
        assert first_answer(f"https://127.0.0.1:{port}") is None
        assert host_problem(f"https://127.0.0.1:{port}") == ""


def test_a_refused_connection_is_one_line_naming_the_host_and_the_cause() -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    assert host_problem(host) == f"--host {host} does not answer: connection refused"
    assert path_problem(host, "/x") == f"GET /x at {host} failed: connection refused"


def test_a_name_that_does_not_resolve_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_name(*_args: object, **_kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_name)  # no DNS query leaves the machine
    assert host_problem("http://shop.invalid:8000") == (
        "--host http://shop.invalid:8000 does not answer: the name 'shop.invalid' does not"
        " resolve (Name or service not known)"
    )


def test_a_host_that_accepts_and_never_answers_times_out() -> None:
    """The kernel accepts into the backlog; nothing reads: no answer within the timeout, a
    problem for the host check, and "" for the path check (slowness is the search's)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(NoAnswer, match=r"^no answer within 0\.3 s$") as caught:
            first_answer(url, timeout_s=0.3)
    assert caught.value.timed_out


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("127.0.0.1:8000", "--host '127.0.0.1:8000' must start with http:// or https://"),
        ("http://", "--host 'http://' is not a URL: no http:// or https:// and a host name"),
        (
            "http://127.0.0.1:99999",
            "--host 'http://127.0.0.1:99999' is not a URL: Port out of range 0-65535",
        ),
    ],
)
def test_a_host_that_is_not_a_url_is_one_line(host: str, problem: str) -> None:
    assert host_problem(host) == problem
