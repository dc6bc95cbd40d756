"""The Locust rate-limit line's calls per request, on a run stopped mid-request.

A field run (docs/field.md) read "each request calls it 4.7 times on average" for a
service that calls its rate-limited upstream exactly 3 times: the stub's calls included
those of the requests still in flight when Locust stopped, the count of requests did not.
The line now divides the calls by the requests the app began, read from the app's own
probe once it has finished the requests Locust cut off: exact by construction. The
service here calls its upstream 3 times, one after another, a request taking over a
second, and 4 users run for 3 s: every run stops with requests cut off mid-way.
`fanout capacity`'s steps end the same way (it named no limit before: each step's calls
held the tail of the requests the step before cut off).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pytest_fanout.load import MARKER_ENV, kill_marked
from tests.helpers import REPO, locust

ORDER = """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with httpx2.AsyncClient(base_url=os.environ["FANOUT_UPSTREAM_URL"]) as pricing:
        app.state.pricing = pricing
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/order")
async def order(body: dict) -> dict:
    prices = []
    for sku in body["skus"]:  # one after another, a pause between: a slow request
        answer = await app.state.pricing.get(f"/price/{sku}")
        prices.append(answer.status_code)
        await asyncio.sleep(0.4)
    return {"prices": prices}


@app.get("/order/{sku}")
async def strict_order(sku: int) -> dict:
    for _ in range(3):  # the same 3 calls, failing on a 429: a knee for `fanout capacity`
        answer = await app.state.pricing.get(f"/price/{sku}")
        answer.raise_for_status()
        await asyncio.sleep(0.3)
    return {"ok": True}
"""

LOCUSTFILE = """
from pytest_fanout.locust import FanoutUser, task


class Buyer(FanoutUser):
    @task
    def order(self):
        self.post("/order", json={"skus": [1, 2, 3]})
"""


def test_calls_per_request_are_exact_when_the_run_stops_mid_request(tmp_path: Path) -> None:
    (tmp_path / "order.py").write_text(ORDER)
    (tmp_path / "locustfile.py").write_text(LOCUSTFILE)
    code, output, _ = locust(
        "-f",
        str(tmp_path / "locustfile.py"),
        "--headless",
        "--run-time",
        "3s",
        "--users",
        "4",
        "--spawn-rate",
        "4",
        "--fanout-app",
        "order:app",
        "--fanout-app-dir",
        str(tmp_path),
        "--fanout-rate-limit",
        "2/s",
        "--fanout-burst",
        "2",
        "--fanout-delay-ms",
        "100",
    )
    assert "Traceback" not in output, output[-3000:]
    found = re.search(
        r"fanout: upstream 'default' answered 429 to (\d+) of (\d+) calls; it allows 2/s and "
        r"each request calls it (.+?): at most ([\d.]+) req/s here",
        output,
    )
    assert found is not None, output[-3000:]
    assert found[3] == "3 times" and found[4] == "0.667", found[0]
    calls = int(found[2])
    assert calls % 3 == 0 and 0 < int(found[1]) < calls, found[0]


@pytest.mark.slow
def test_capacity_names_the_limit_with_the_exact_calls_per_request(tmp_path: Path) -> None:
    """6/s and 3 calls a request: at most 2 req/s; the steps of 4 s end mid-request."""
    (tmp_path / "order.py").write_text(ORDER)
    marker = uuid.uuid4().hex
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest_fanout.cli", "capacity", "--app", "order:app",
             "--app-dir", str(tmp_path), "--rate-limit", "6/s", "--burst", "3",
             "--delay-ms", "100", "--path", "/order/1", "--slo-p95-ms", "3000",
             "--start-rps", "1", "--step-s", "4", "--precision", "0.5", "--budget-s", "60"],
            cwd=REPO, env={**os.environ, MARKER_ENV: marker}, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        left = kill_marked(marker)
    assert not left, f"left behind: {left}"
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(
        r"^/order/1: capacity [\d.]+ req/s: upstream 'default' allows 6/s and each request "
        r"calls it 3 times \(at most 2 req/s\)$",
        result.stdout,
        re.MULTILINE,
    ), result.stdout
