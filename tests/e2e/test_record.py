"""`fanout record`, end to end: a recording proxy in front of a real upstream on loopback
(a stub process playing the real service), exercised over HTTP, stopped with Ctrl-C as a
user would; the routes it writes into pyproject.toml keep the file's other content, drop
credentials, carry the measured latency, and load into a stub as they are. A HAR file
gives routes the same way. Bad input is one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers import StubUpstreamServer
from pytest_fanout.servers.process import tls_context

#: The real service's latency: the recorded median can only be at or above it.
REAL_DELAY_MS = 60
#: The pause between its streamed events.
STREAM_PACE_MS = 120
EXISTING = """# my service
[project]
name = "shop"

[tool.fanout]
app = "shop.service:app"  # keep me

[tool.fanout.upstreams.pricing]
env = "PRICING_API"
"""


@pytest.fixture(scope="module")
def real() -> Iterator[StubUpstreamServer]:
    """The 'real' pricing service: a stub process with answers, credentials and a delay."""
    with StubUpstreamServer(Behaviour(delay_ms=REAL_DELAY_MS)) as server:
        server.route(
            "GET",
            "/price/{sku}",
            json={"sku": "{sku}", "cents": 250},
            headers={"set-cookie": "s=secret", "x-api-key": "k", "x-region": "eu"},
        )
        server.route("POST", "/quote", status=201, body="quoted", headers={"x-session-id": "9"})
        server.route(
            "GET",
            "/v1/stream",
            events=["hello", {"event": "done", "data": '{"n":2}'}],
            delay_ms=REAL_DELAY_MS,
            chunk_delay_ms=STREAM_PACE_MS,
        )
        yield server


def fanout(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_proxy_records_routes_into_the_stack_spec(
    real: StubUpstreamServer, tmp_path: Path, stop: signal.Signals
) -> None:
    spec = tmp_path / "pyproject.toml"
    spec.write_text(EXISTING)
    # Progress (issue 35) with Ctrl-C; -q with SIGTERM: the same routes, no progress lines.
    quiet = ["-q"] if stop == signal.SIGTERM else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_fanout.cli", "record", "--upstream", f"pricing={real.url}"]
        + quiet,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or "Ctrl-C stops" in line:
                break
            lines.append(line)
        found = re.search(r"recording pricing: (http://127\.0\.0\.1:\d+) -> ", "".join(lines))
        assert found, lines
        with httpx2.Client(base_url=found[1], timeout=30, verify=tls_context()) as client:
            for sku in ("a", "a", "a", "b"):
                answer = client.get(f"/price/{sku}")
                assert answer.json() == {"sku": sku, "cents": 250}  # the real answer, passed on
            assert client.post("/quote", json={"skus": ["a"]}).text == "quoted"
            with client.stream("GET", "/v1/stream") as streamed:
                pieces = list(streamed.iter_raw())
            assert len(pieces) >= 2  # the proxy passes a stream on as it comes
            assert b"".join(pieces) == b'data: hello\n\nevent: done\ndata: {"n":2}\n\n'
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "pricing: 4 route(s) from 6 exchange(s)" in out
    # Each new method, path and status once, as it is recorded (a recording runs for minutes).
    seen = re.findall(r"^  pricing: (\S+ \S+ -> \d+) \((\d+) exchange\(s\) recorded\)$", out, re.M)
    assert seen == (
        []
        if quiet
        else [
            ("GET /price/a -> 200", "1"),
            ("GET /price/b -> 200", "4"),
            ("POST /quote -> 201", "5"),
            ("GET /v1/stream -> 200", "6"),
        ]
    ), out
    text = spec.read_text()
    assert text.startswith(EXISTING.split("[tool.fanout.upstreams")[0])  # comments kept
    table = tomllib.loads(text)["tool"]["fanout"]
    assert table["app"] == "shop.service:app"
    pricing = table["upstreams"]["pricing"]
    assert pricing["env"] == "PRICING_API"  # the user's own, kept
    routes = {(r["method"], r["path"]): r for r in pricing["routes"]}
    assert sorted(routes) == [
        ("GET", "/price/a"),
        ("GET", "/price/b"),
        ("GET", "/v1/stream"),
        ("POST", "/quote"),
    ]
    price = routes[("GET", "/price/a")]
    assert price["json"] == {"sku": "a", "cents": 250}
    assert price["headers"] == {"x-region": "eu"}  # set-cookie and x-api-key dropped
    assert price["delay_ms"] >= REAL_DELAY_MS
    quote = routes[("POST", "/quote")]
    assert (quote["status"], quote["body"]) == (201, "quoted")
    assert "x-session-id" not in quote.get("headers", {})
    # A stream is recorded as its events, its time to first byte and its pace (lower bounds:
    # the real service cannot send earlier).
    stream = routes[("GET", "/v1/stream")]
    assert stream["events"] == ["hello", {"event": "done", "data": '{"n":2}'}]
    assert stream["delay_ms"] >= REAL_DELAY_MS
    assert stream["chunk_delay_ms"] >= STREAM_PACE_MS * 0.9
    # The routes load into a stub as they are (the stub validates every setting).
    with StubUpstreamServer(Behaviour(delay_ms=0)) as stub:
        for route in pricing["routes"]:
            stub.route(**route)
        assert httpx2.get(stub.url + "/price/b", timeout=30, verify=tls_context()).json() == {
            "sku": "b",
            "cents": 250,
        }


def har(entries: list[dict]) -> str:
    return json.dumps({"log": {"version": "1.2", "entries": entries}})


def entry(method: str, url: str, status: int, text: str, ms: float) -> dict:
    return {
        "request": {"method": method, "url": url, "headers": []},
        "response": {
            "status": status,
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "content": {"mimeType": "application/json", "text": text},
        },
        "time": ms,
    }


def test_a_har_file_gives_routes_with_the_latency_distribution(tmp_path: Path) -> None:
    times = [100.0] * 90 + [400.0] * 10  # median 100 ms, a tail at 400 ms
    nulls = entry("GET", "https://api.example.test/v2/nulls", 200, '{"a": null, "b": [1]}', 5)
    entries = [nulls] + [
        entry("GET", "https://api.example.test/v2/rates", 200, '{"eur": 1}', t) for t in times
    ]
    entries.append(entry("GET", "https://other.example.test/v2/rates", 200, "{}", 5))
    (tmp_path / "session.har").write_text(har(entries))
    result = fanout(
        "record",
        "--upstream",
        "rates=https://api.example.test/v2",
        "--har",
        "session.har",
        "--spec",
        "stack.toml",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rates = tomllib.loads((tmp_path / "stack.toml").read_text())["tool"]["fanout"]["upstreams"]
    assert rates["rates"]["env"] == "RATES_URL"  # a new upstream's default variable
    nulls_route, route = rates["rates"]["routes"]
    # TOML has no null: that answer is kept as its JSON text, sent byte for byte.
    assert nulls_route["body"] == '{"a":null,"b":[1]}'
    assert nulls_route["headers"] == {"content-type": "application/json"}
    assert route == {
        "method": "GET",
        "path": "/rates",
        "status": 200,
        "json": {"eur": 1},
        "delay_ms": 100.0,
        "p99_ms": 400.0,
    }


@pytest.mark.parametrize(
    ("args", "files", "status", "line"),
    [
        (["--upstream", "pricing"], {}, 2, "'pricing' is not NAME=URL"),
        (["--upstream", "p=ftp://x"], {}, 2, "is not an http(s) base URL"),
        (["--upstream", "p=http://x", "--har", "none.har"], {}, 2, "none.har: no such file"),
        (
            ["--upstream", "p=http://x", "--har", "bad.har"],
            {"bad.har": '{"log": {}}'},
            2,
            "bad.har: not a HAR file (no log.entries list)",
        ),
        (
            ["--upstream", "p=http://x", "--har", "ok.har", "--spec", "broken.toml"],
            {"ok.har": har([entry("GET", "http://x/a", 200, "{}", 1)]), "broken.toml": "[tool"},
            2,
            "broken.toml: is not valid TOML",
        ),
        (
            ["--upstream", "p=http://x", "--upstream", "p=http://y", "--har", "x.har"],
            {},
            2,
            "--upstream p is given twice",
        ),
    ],
    ids=["no-url", "bad-scheme", "no-har", "not-har", "bad-spec", "twice"],
)
def test_bad_input_is_one_line(
    tmp_path: Path, args: list[str], files: dict[str, str], status: int, line: str
) -> None:
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    result = fanout("record", *args, cwd=tmp_path)
    assert result.returncode == status, result.stderr
    assert line in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
