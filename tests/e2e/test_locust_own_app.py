"""`FanoutUser` on a user's own app: their tasks, their success check, the embedded stack.

The test writes, in an empty directory, what a user would: a small FastAPI
service that fans out to two named upstreams (inventory, pricing), and a
locustfile of `FanoutUser` tasks. `locust -f locustfile.py --fanout-app
shop:app --fanout-upstream ...` starts a stub per upstream and the app, runs
only the user's tasks (the reference users that `import *` brings stay out),
and a threshold the run cannot meet exits 3 with its one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from pytest_fanout.load import (
    EXIT_THRESHOLD,
    MARKER_ENV,
    VIOLATION_PREFIX,
    kill_marked,
    parse_stats_json,
)

SHOP = """
import asyncio
import os
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with (
        httpx2.AsyncClient(base_url=os.environ["INVENTORY_URL"]) as inventory,
        httpx2.AsyncClient(base_url=os.environ["PRICING_URL"]) as pricing,
    ):
        app.state.inventory, app.state.pricing = inventory, pricing
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/basket")
async def basket(body: dict) -> dict:
    calls = [app.state.inventory.get(f"/stock/{i}") for i in body["ids"]]
    calls += [app.state.pricing.get(f"/price/{i}") for i in body["ids"]]
    answers = await asyncio.gather(*calls)
    return {"ok": all(a.status_code == 200 for a in answers), "items": len(body["ids"])}


@app.get("/broken")
async def broken() -> dict:
    return {"ok": False}
"""

LOCUSTFILE = """
from pytest_fanout.locust import *


class Shopper(FanoutUser):
    def check(self, response):
        # The user's own rule: a 200 is a success only when the answer says ok.
        return super().check(response) or (None if response.json()["ok"] else "not ok")

    @task
    def basket(self):
        self.post("/basket", json={"ids": [1, 2, 3]})

    @task
    def broken(self):
        self.get("/broken")
"""


def test_fanout_user_on_an_own_app_with_a_threshold_that_fails(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(SHOP)
    (tmp_path / "locustfile.py").write_text(LOCUSTFILE)
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                "locustfile.py",
                "--headless",
                "-u",
                "2",
                "-r",
                "2",
                "-t",
                "3s",
                "--only-summary",
                "--json-file",
                "stats",
                "--fanout-app",
                "shop:app",
                "--fanout-upstream",
                "inventory=INVENTORY_URL",
                "--fanout-upstream",
                "pricing=PRICING_URL",
                "--fanout-upstream-delay-ms",
                "50",
                "--fanout-max-p95-ms",
                "1",
            ],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        left = kill_marked(marker)
    output = proc.stdout + proc.stderr
    assert not left, f"left behind: {left}"
    assert proc.returncode == EXIT_THRESHOLD, output
    assert "Traceback" not in output, output
    assert "fanout: embedded stack: app " in output
    # One stub per named upstream, its URL in the variable the app reads.
    for name in ("inventory", "pricing"):
        assert f"fanout: embedded stack: upstream {name} http://127.0.0.1:" in output, output

    endpoints, total, _ = parse_stats_json(json.loads((tmp_path / "stats.json").read_text()))
    # Only the user's tasks ran: the reference users stayed out.
    assert sorted(endpoints) == ["GET /broken", "POST /basket"], output
    basket, broken = endpoints["POST /basket"], endpoints["GET /broken"]
    assert basket.requests > 0 and basket.failures == 0
    # The user's check, not a status: every /broken answer is a 200 and a failure.
    assert broken.requests > 0 and broken.failures == broken.requests

    lines = [line for line in output.splitlines() if line.startswith(VIOLATION_PREFIX)]
    # The stub answers after 50 ms: the basket's p95 cannot be 1 ms.
    assert f"{VIOLATION_PREFIX}--fanout-max-p95-ms 1 ms: p95 of POST /basket is" in "\n".join(
        lines
    ), output
    # An endpoint whose every answer failed completed nothing: its own line.
    assert (
        f"{VIOLATION_PREFIX}--fanout-min-completed 1: completed requests of GET /broken is 0"
        in lines
    ), output
