"""`fanout serve`, `fanout patterns` and `fanout measure` as a user runs them: real subprocesses."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from pytest_fanout.servers.process import tls_context
from tests.helpers import REPO, descendants_of, pid_alive


def _read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} within {timeout_s}s; got {lines}")


def test_serve_runs_both_and_ctrl_c_stops_both() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_fanout.cli",
            "serve",
            "--app-port",
            "0",
            "--upstream-port",
            "0",
            "--delay-ms",
            "10",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _read_until(proc, "Ctrl-C stops", 30)
        urls = dict(
            re.findall(r"^(upstream|app)\s+(http://127\.0\.0\.1:\d+)", "".join(lines), re.MULTILINE)
        )
        children = descendants_of(proc.pid)
        assert len(children) >= 2
        body = httpx2.get(urls["app"] + "/async/5", timeout=10, verify=tls_context()).json()
        assert body["status_codes"] == [200] * 5
        token = re.search(r"^token\s+(\S+)", "".join(lines), re.MULTILINE)[1]
        auth = {"Authorization": f"Bearer {token}"}
        assert (
            httpx2.get(urls["upstream"] + "/__upstream__/stats", verify=tls_context()).status_code
            == 403
        )
        stats = httpx2.get(
            urls["upstream"] + "/__upstream__/stats", headers=auth, verify=tls_context()
        ).json()
        assert stats["requests"] == 5
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval
    assert not any(pid_alive(p) for p in children)


def test_patterns_prints_the_comparison_table() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_fanout.cli",
            "patterns",
            "--n",
            "6",
            "--max-concurrent",
            "2",
            "--delay-ms",
            "30",
            "--repeat",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {
        line.split()[0]: line.split()
        for line in result.stdout.splitlines()
        if line.startswith(("sync ", "async ", "async_sem ", "blocking "))
    }
    assert set(rows) == {"sync", "async", "async_sem", "blocking"}
    # the peak-in-flight column is exact: 1, 6, 2, 1
    peaks = {name: int(re.search(r"x\s+(\d+)\s", " ".join(r)).group(1)) for name, r in rows.items()}
    assert peaks == {"sync": 1, "async": 6, "async_sem": 2, "blocking": 1}


SHOP = """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI, HTTPException


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx2.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"]) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/basket/{n}")
async def basket(n: int) -> dict:
    answers = await asyncio.gather(*(app.state.client.get(f"/item/{i}") for i in range(n)))
    return {"items": len(answers)}


@app.get("/broken")
async def broken() -> dict:
    raise HTTPException(503, "the warehouse is closed")
"""


def _fanout(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_fanout.cli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_measure_a_path_of_a_users_own_app(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(SHOP)
    result = _fanout(
        "measure",
        "/basket/8",
        "--app",
        "shop:app",
        "--app-dir",
        str(tmp_path),
        "--repeat",
        "3",
        "--n",
        "8",
        "--delay-ms",
        "200",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Progress first (issue 35: each step as it ends, as `fanout capacity` prints its
    # steps): the warm-up, the held probe and its waves, each sample; then the report.
    progress = [line for line in result.stdout.splitlines() if line.startswith("  GET /basket/")]
    assert [re.sub(r"[\d.]+ m?s\b", "T", line) for line in progress] == [
        "  GET /basket/8: warm-up 1/1 T",
        "  GET /basket/8: held probe T, waves default [8]",
        "  GET /basket/8: sample 1/3 T",
        "  GET /basket/8: sample 2/3 T",
        "  GET /basket/8: sample 3/3 T",
    ], result.stdout
    out = result.stdout.split("\n", len(progress))[-1]
    assert out.startswith("GET /basket/8 on shop:app"), out
    # exact: 8 calls per request, all 8 in flight at once (gather)
    assert re.search(r"^\s+upstream\s+requests 8, peak in flight 8,", out, re.MULTILINE), out
    median = float(re.search(r"median\s+([\d.]+) ms", out).group(1))
    assert median >= 200  # one wave of 200 ms calls, at the least
    assert re.search(r"efficiency\s+[\d.]+; ideal 200 ms \(n=8, concurrency 8\)", out), out
    assert "loop lag" in out and "p95" in out
    first_byte = float(re.search(r"first byte\s+([\d.]+) ms \(median\)", out).group(1))
    assert first_byte <= median  # a JSON answer's first byte comes with its last


SHOP_ROUTED = """
[tool.fanout]
app = "shop:app"
delay_ms = 100

[tool.fanout.upstreams.warehouse]
env = "FANOUT_UPSTREAM_URL"
routes = [{ method = "GET", path = "/item/{i}", delay_ms = 300 }]
"""


def test_measure_names_each_routes_delay_and_takes_an_ideal_time(tmp_path: Path) -> None:
    """The header says the 300 ms the only route waits, not only the stack's 100 ms; and
    --ideal-s gives the ideal time where --n cannot (the route's own delay)."""
    (tmp_path / "shop.py").write_text(SHOP)
    (tmp_path / "pyproject.toml").write_text(SHOP_ROUTED)
    result = _fanout(
        "measure", "/basket/2", "--repeat", "1", "--ideal-s", "0.3", "-q", cwd=tmp_path
    )  # -q: no progress lines, the report alone
    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[0]
    assert header.startswith(
        "GET /basket/2 on shop:app (stub upstream delay 100 ms; route GET /item/{i} 300 ms,"
    ), header
    median = float(re.search(r"median\s+([\d.]+) ms", result.stdout).group(1))
    assert median >= 300  # the route's delay is the one the stub waited
    assert re.search(
        r"^\s+efficiency\s+[\d.]+; ideal 300 ms \(given: --ideal-s\)$", result.stdout, re.M
    ), result.stdout
    bad = _fanout("measure", "/basket/2", "--ideal-s", "0", cwd=tmp_path)
    assert bad.returncode != 0 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) <= 2 and "must be > 0" in bad.stderr, bad.stderr


def test_measure_an_error_answer_is_one_line_and_a_failure(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(SHOP)
    result = _fanout("measure", "/broken", "--app", "shop:app", "--repeat", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        'fanout: error: GET /broken answered 503, expected 200: {"detail":"the warehouse is'
        ' closed"}'
    ], result.stderr


def test_patterns_prints_no_header_when_the_stack_does_not_start(tmp_path: Path) -> None:
    result = _fanout("patterns", "--app", "nowhere_to_be_found:app", cwd=tmp_path)
    assert result.returncode == 4  # ExitCode.TARGET_UNUSABLE
    assert result.stdout == ""  # no "Fan-out of n=..." header, no table
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "nowhere_to_be_found" in result.stderr


SHOP_TWO_UPSTREAMS = """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx2.AsyncClient(base_url=os.environ["INVENTORY_URL"]) as inventory, \\
            httpx2.AsyncClient(base_url=os.environ["PRICING_URL"]) as pricing:
        app.state.inventory, app.state.pricing = inventory, pricing
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/basket")
async def basket(body: dict) -> dict:
    ids = body["ids"]
    calls = [app.state.inventory.get(f"/stock/{i}") for i in ids]
    calls += [app.state.pricing.get(f"/price/{i}") for i in ids]
    answers = await asyncio.gather(*calls)
    return {"ok": all(a.status_code == 200 for a in answers)}
"""


def test_measure_a_post_with_two_named_upstreams(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(SHOP_TWO_UPSTREAMS)
    result = _fanout(
        "measure", "/basket", "--app", "shop:app",
        "--upstream", "inventory=INVENTORY_URL", "--upstream", "pricing=PRICING_URL",
        "--method", "POST", "--json", '{"ids": [1, 2, 3, 4]}', "--repeat", "3",
        "--delay-ms", "200", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("POST /basket on shop:app"), out
    # exact, per upstream: 4 calls each, all 4 in flight at once
    for name in ("inventory", "pricing"):
        assert re.search(rf"^\s+{name}\s+requests 4, peak in flight 4, new connections \d+$",
                         out, re.MULTILINE), out  # fmt: skip


def test_serve_a_users_app_with_two_named_upstreams(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(SHOP_TWO_UPSTREAMS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_fanout.cli", "serve", "--app", "shop:app",
         "--app-dir", str(tmp_path), "--app-port", "0", "--upstream-port", "0",
         "--upstream", "inventory=INVENTORY_URL", "--upstream", "pricing=PRICING_URL",
         "--delay-ms", "10"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        text = "".join(_read_until(proc, "Ctrl-C stops", 30))
        upstreams = re.findall(
            r"^upstream\s+(http://127\.0\.0\.1:\d+)\s+\((\w+), in (\w+), pid \d+\)$", text, re.M
        )
        assert [(name, env) for _, name, env in upstreams] == [
            ("inventory", "INVENTORY_URL"),
            ("pricing", "PRICING_URL"),
        ], text
        tokens = re.findall(r"^token\s+(\S+)", text, re.MULTILINE)
        assert len(tokens) == 2 and tokens[0] != tokens[1]
        app_url = re.search(r"^app\s+(http://127\.0\.0\.1:\d+)", text, re.MULTILINE)[1]
        answer = httpx2.post(
            app_url + "/basket", json={"ids": [1, 2, 3]}, timeout=10, verify=tls_context()
        )
        assert answer.json() == {"ok": True}
        for (url, _, _), token in zip(upstreams, tokens, strict=True):
            auth = {"Authorization": f"Bearer {token}"}
            stats = httpx2.get(
                url + "/__upstream__/stats", headers=auth, timeout=10, verify=tls_context()
            ).json()
            assert stats["requests"] == 3  # each upstream saw its own three calls, exactly
        children = descendants_of(proc.pid)
        assert len(children) >= 3
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval
    assert not any(pid_alive(p) for p in children)
