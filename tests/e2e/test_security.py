"""Security defaults: loopback only, no harness paths in the deployed app, caps, no SSRF.

- The app, the stub upstream and the probe listen on 127.0.0.1 unless told
  otherwise (the library defaults, the CLI defaults, and the live sockets).
- The stub's control paths (/__upstream__/...) and the probe (/__fanout__/probe)
  do not exist in the app as users deploy it.
- The caps on n and on concurrency hold on every route, and a rejected request
  never reaches the upstream.
- No request chooses the upstream: query parameters and Host-style headers do
  not change what the upstream sees, and the OpenAPI schema has no URL input.
"""

from __future__ import annotations

import inspect
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import psutil
import pytest
from fastapi.testclient import TestClient

from pytest_fanout import cli
from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.probe import PROBE_PATH
from pytest_fanout.servers.process import LOOPBACK, ServerProcess, tls_context
from pytest_fanout.servers.stack import AppServer, Stack, StubUpstreamServer
from pytest_fanout.servers.upstream import CONTROL_PREFIX
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
MAX_N = 50
MAX_CONCURRENCY = 20
POOL_SIZE = 16
HARNESS_PATHS = [
    CONTROL_PREFIX + "stats",
    CONTROL_PREFIX + "reset",
    CONTROL_PREFIX + "config",
    PROBE_PATH,
]
ROUTES = ["/sync/{n}", "/async/{n}", "/async_sem/{n}/5", "/blocking/{n}"]


def listening_addresses(port: int) -> set[str]:
    """Local addresses of every TCP socket LISTENing on `port`, on this machine."""
    return {
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    }


def listening_ports_of(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every socket the process `pid` listens on."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


# ---- loopback by default ----------------------------------------------------------------


@pytest.mark.parametrize("kind", [ServerProcess, StubUpstreamServer, AppServer, Stack])
def test_library_defaults_bind_loopback(kind: type) -> None:
    assert LOOPBACK == "127.0.0.1"
    assert inspect.signature(kind.__init__).parameters["host"].default == LOOPBACK


@pytest.mark.parametrize("command", ["upstream", "serve"])
def test_cli_defaults_bind_loopback(command: str) -> None:
    args = cli.build_parser().parse_args([command])
    assert args.host == "127.0.0.1"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    env = {
        "FANOUT_MAX_N": str(MAX_N),
        "FANOUT_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        "FANOUT_POOL_SIZE": str(POOL_SIZE),
    }
    with Stack(behaviour=Behaviour(delay_ms=5), app_env=env) as running:
        yield running


@pytest.fixture
def app(stack: Stack) -> AppServer:
    assert stack.app is not None
    stack.upstream.restore()
    stack.upstream.reset()
    return stack.app


def test_stack_listens_on_loopback_only(stack: Stack, app: AppServer) -> None:
    assert listening_addresses(stack.upstream.port) == {"127.0.0.1"}
    assert listening_addresses(app.port) == {"127.0.0.1"}
    # The probe opens no port of its own: it answers on the app's one loopback socket.
    assert app.pid is not None
    assert listening_ports_of(app.pid) == {("127.0.0.1", app.port)}
    assert app.control.get(PROBE_PATH).status_code == 200


def test_the_probe_needs_the_runs_token(app: AppServer) -> None:
    assert httpx2.get(app.url + PROBE_PATH, timeout=10, verify=tls_context()).status_code == 403
    assert httpx2.post(app.url + PROBE_PATH, timeout=10, verify=tls_context()).status_code == 403
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (
        httpx2.get(
            app.url + PROBE_PATH, headers=wrong, timeout=10, verify=tls_context()
        ).status_code
        == 403
    )
    # The harness's own client carries it: the probe answers with its gauges.
    assert {"requests", "inflight", "peak_inflight"} <= set(app.probe_stats())


class LineReader:
    """Lines of a child's stdout, read by a thread, so every wait for one is bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in stream], daemon=True).start()

    def until(self, pattern: str, timeout_s: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s}s")


@pytest.fixture
def run_cli() -> Iterator[Callable[..., tuple[subprocess.Popen[str], LineReader]]]:
    """Start `fanout ARGS` in the background; interrupt it (Ctrl-C) and reap it afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], LineReader]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_fanout.cli", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        return proc, LineReader(proc)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_fanout_upstream_listens_on_loopback(run_cli: Callable) -> None:
    _, out = run_cli("upstream", "--port", "0", "--delay-ms", "0")
    host, port = out.until(r"stub upstream on http://([\d.]+):(\d+)").groups()
    assert host == "127.0.0.1" and int(port) > 0
    wait_until(lambda: bool(listening_addresses(int(port))), 10, "the stub listens")
    assert listening_addresses(int(port)) == {"127.0.0.1"}
    assert (
        httpx2.get(f"http://127.0.0.1:{port}/items/1", timeout=10, verify=tls_context()).status_code
        == 200
    )


def test_fanout_serve_listens_on_loopback_and_stops_its_children(run_cli: Callable) -> None:
    proc, out = run_cli("serve", "--app-port", "0", "--upstream-port", "0", "--delay-ms", "0")
    served = r"\s+http://([\d.]+):(\d+)\s+\((?:[^)]*, )?pid (\d+)\)"
    up_host, up_port, up_pid = out.until("upstream" + served).groups()
    app_host, app_port, app_pid = out.until("app" + served).groups()
    assert up_host == app_host == "127.0.0.1"
    assert listening_addresses(int(up_port)) == {"127.0.0.1"}
    assert listening_addresses(int(app_port)) == {"127.0.0.1"}
    assert (
        httpx2.get(
            f"http://127.0.0.1:{app_port}/async/3", timeout=30, verify=tls_context()
        ).status_code
        == 200
    )

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) != 0  # interrupted: 130
    for pid in (int(up_pid), int(app_pid)):
        wait_until(
            lambda p=pid: (
                not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
            ),
            10,
            f"pid {pid} ended",
        )


# ---- the harness's paths are not in the deployed app ------------------------------------


@pytest.fixture(scope="module")
def deployed() -> Iterator[TestClient]:
    """`app.main:app` exactly as users import it: no probe, no stub."""
    from app.main import app as deployed_app

    with TestClient(deployed_app) as client:
        yield client


@pytest.mark.parametrize("path", HARNESS_PATHS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_harness_paths_do_not_exist_in_the_deployed_app(
    deployed: TestClient, method: str, path: str
) -> None:
    assert deployed.request(method, path).status_code == 404


def test_deployed_schema_has_no_harness_paths(deployed: TestClient) -> None:
    paths = deployed.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/__upstream__", "/__fanout__"))]


def test_deployed_under_uvicorn_has_no_harness_paths() -> None:
    """The same app served by uvicorn without the harness's probe wrapper."""
    with ServerProcess("app.main:app", name="deployed", cwd=REPO, ready_path="/healthz") as s:
        for path in HARNESS_PATHS:
            assert httpx2.get(s.url + path, timeout=10, verify=tls_context()).status_code == 404, (
                path
            )
            assert httpx2.post(s.url + path, timeout=10, verify=tls_context()).status_code == 404, (
                path
            )


@pytest.mark.parametrize("path", HARNESS_PATHS[:3])
def test_app_does_not_pass_the_stubs_control_paths_through(app: AppServer, path: str) -> None:
    """The harness-wrapped app has the probe, but the stub's control paths stay unreachable."""
    assert httpx2.get(app.url + path, timeout=10, verify=tls_context()).status_code == 404
    assert (
        httpx2.post(
            app.url + path, json={"delay_ms": 0}, timeout=10, verify=tls_context()
        ).status_code
        == 404
    )


# ---- the caps hold on every route -------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_caps_on_n_hold_on_every_route(stack: Stack, app: AppServer, route: str) -> None:
    with httpx2.Client(base_url=app.url, timeout=60, verify=tls_context()) as client:
        for n in (MAX_N + 1, 10**6, 10**30):
            assert client.get(route.format(n=n)).status_code == 422, n
        assert stack.upstream.stats()["requests"] == 0  # no amplification, not even partly
        assert client.get(route.format(n=MAX_N)).status_code == 200
    assert stack.upstream.stats()["requests"] == MAX_N  # exactly n, never more


def test_cap_on_max_concurrent_holds(stack: Stack, app: AppServer) -> None:
    with httpx2.Client(base_url=app.url, timeout=60, verify=tls_context()) as client:
        for c in (MAX_CONCURRENCY + 1, 10**6, 10**30):
            assert client.get(f"/async_sem/10/{c}").status_code == 422, c
        assert stack.upstream.stats()["requests"] == 0
        stack.upstream.configure(delay_ms=100)
        assert client.get(f"/async_sem/{MAX_N}/{MAX_CONCURRENCY}").status_code == 200
    stats = stack.upstream.stats()
    assert stats["requests"] == MAX_N
    assert stats["peak_inflight"] <= MAX_CONCURRENCY


def test_pool_caps_in_flight_calls_across_concurrent_requests(stack: Stack, app: AppServer) -> None:
    """FANOUT_POOL_SIZE bounds the whole process, even with several /async/{max} at once."""
    stack.upstream.configure(delay_ms=100)
    with (
        httpx2.Client(base_url=app.url, timeout=60, verify=tls_context()) as client,
        ThreadPoolExecutor(3) as pool,
    ):
        answers = list(pool.map(lambda _: client.get(f"/async/{MAX_N}"), range(3)))
    assert [a.status_code for a in answers] == [200] * 3
    stats = stack.upstream.stats()
    assert stats["requests"] == 3 * MAX_N
    assert stats["peak_inflight"] <= POOL_SIZE


# ---- no request chooses the upstream ----------------------------------------------------


@pytest.fixture(scope="module")
def decoy() -> Iterator[StubUpstreamServer]:
    """A second upstream a malicious request would like the app to call."""
    with StubUpstreamServer(Behaviour(delay_ms=0)) as running:
        yield running  # type: ignore[misc]


SSRF_ATTEMPTS: list[tuple[str, dict[str, str]]] = [
    ("?url={decoy}/items/x", {}),
    ("?upstream={decoy}&upstream_url={decoy}&target={decoy}&host={decoy_host}", {}),
    ("?FANOUT_UPSTREAM_URL={decoy}", {}),
    ("", {"Host": "{decoy_host}"}),
    ("", {"X-Forwarded-Host": "{decoy_host}", "X-Forwarded-Proto": "http"}),
    ("", {"X-Upstream-Url": "{decoy}", "Forwarded": "host={decoy_host}"}),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("query", "headers"), SSRF_ATTEMPTS)
def test_no_request_chooses_the_upstream(
    stack: Stack,
    app: AppServer,
    decoy: StubUpstreamServer,
    route: str,
    query: str,
    headers: dict[str, str],
) -> None:
    decoy.reset()
    values = {"decoy": decoy.url, "decoy_host": f"127.0.0.1:{decoy.port}"}
    sent = {k: v.format(**values) for k, v in headers.items()}
    response = httpx2.get(
        app.url + route.format(n=3) + query.format(**values),
        headers=sent,
        timeout=60,
        verify=tls_context(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["status_codes"] == [200] * 3
    assert stack.upstream.stats()["requests"] == 3  # the configured upstream, exactly n
    assert decoy.stats()["requests"] == 0


def test_schema_has_no_url_input(deployed: TestClient) -> None:
    """Every operation takes only integer path parameters: no query, header or body input."""
    spec = deployed.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert "requestBody" not in operation, (method, path)
            for param in operation.get("parameters", []):
                assert param["in"] == "path", (method, path, param)
                assert param["schema"]["type"] == "integer", (method, path, param)
                assert not re.search(r"url|host|upstream|target", param["name"], re.I)


def test_unreachable_answer_does_not_disclose_the_upstream_address() -> None:
    closed = StubUpstreamServer(Behaviour(delay_ms=0)).start()
    closed.stop()
    with AppServer(upstream_url=closed.url) as app:
        response = httpx2.get(app.url + "/async/2", timeout=60, verify=tls_context())
    assert response.status_code == 502
    assert f"{closed.port}" not in response.text


# ---- the stub's control paths need the run's token --------------------------------------

CONTROL_CALLS = [
    ("GET", "stats"),
    ("POST", "reset"),
    ("GET", "config"),
    ("POST", "config"),
    ("POST", "restore"),
    ("GET", "routes"),
    ("POST", "routes"),
    ("DELETE", "routes"),
    ("GET", "requests"),
    ("DELETE", "requests"),
]


@pytest.mark.parametrize(("method", "action"), CONTROL_CALLS)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic eDp5", "Bearer"])
def test_control_paths_refuse_requests_without_the_token(
    stack: Stack, method: str, action: str, auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth else {}
    body = {"method": "GET", "path": "/x", "handler": "os:system"} if action == "routes" else {}
    response = httpx2.request(
        method,
        stack.upstream.url + CONTROL_PREFIX + action,
        headers=headers,
        json=body if method == "POST" else None,
        timeout=10,
        verify=tls_context(),
    )
    assert response.status_code == 403
    assert "Authorization: Bearer <token>" in response.json()["detail"]
    assert stack.upstream.behaviour() == Behaviour(delay_ms=5)  # nothing changed
    assert httpx2.get(stack.upstream.url + "/x", timeout=10, verify=tls_context()).json() == {
        "ok": True
    }


def test_each_stub_gets_its_own_random_token() -> None:
    first, second = StubUpstreamServer(), StubUpstreamServer()
    assert first.token != second.token and len(first.token) >= 32


def test_control_body_over_the_cap_is_413(stack: Stack) -> None:
    before = psutil.Process(stack.upstream.pid).memory_info().rss
    response = stack.upstream.control.post(
        CONTROL_PREFIX + "config", content=b" " * (8 * 1024 * 1024)
    )
    assert response.status_code == 413
    after = psutil.Process(stack.upstream.pid).memory_info().rss
    assert after - before < 4 * 1024 * 1024  # the body was refused, not kept


def test_fanout_upstream_token_flag_sets_the_token(run_cli: Callable) -> None:
    _, out = run_cli("upstream", "--port", "0", "--delay-ms", "0", "--token", "s3cret")
    port = out.until(r"stub upstream on http://[\d.]+:(\d+)")[1]
    url = f"http://127.0.0.1:{port}{CONTROL_PREFIX}stats"
    assert httpx2.get(url, timeout=10, verify=tls_context()).status_code == 403
    assert (
        httpx2.get(
            url, headers={"Authorization": "Bearer s3cret"}, timeout=10, verify=tls_context()
        ).json()["requests"]
        == 0
    )


def test_fanout_upstream_without_token_makes_one_and_prints_it(run_cli: Callable) -> None:
    _, out = run_cli("upstream", "--port", "0", "--delay-ms", "0")
    port = out.until(r"stub upstream on http://[\d.]+:(\d+)")[1]
    token = out.until(r"control token: (\S+) ")[1]
    url = f"http://127.0.0.1:{port}{CONTROL_PREFIX}stats"
    assert httpx2.get(url, timeout=10, verify=tls_context()).status_code == 403
    assert (
        httpx2.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=10, verify=tls_context()
        ).status_code
        == 200
    )
