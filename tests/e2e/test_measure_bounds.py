"""Issue 32, items 6 and 7: what an app's answer and an app's CPU can do to a measurement.

- `request_timeout` is a deadline for the whole answer: an app that trickles
  its body a byte at a time is cut there, in one line (it used to "answer"
  after 10 s and pass).
- An answer's body is bounded (`max_answer_bytes`), read as a stream and
  never held past the bound: one line naming the path and the limit.
- An app with a thread at 100% CPU never goes idle: the held probe gives up
  on its idleness after `max_busy_s`, the measurement is taken with the timed
  samples, and `m.structure_note` says why the structure is missing (it used
  to end in a 500 from the app's own client timeout, or 40 s and a wrong
  blame).

Each case is a real pytest run of a small FastAPI app in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import NO_UNUSED_PLUGINS, REPO

APP = """
import asyncio
import gzip
import os
import threading
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse

UPSTREAM = os.environ["FANOUT_UPSTREAM_URL"]
stop = threading.Event()
CLIENTS = []
BOMB = gzip.compress(bytes(16 * 1024 * 1024), compresslevel=1)  # 16 MiB in ~16 KiB


def spin():
    while not stop.is_set():  # a thread at 100% CPU, outside any request
        sum(range(1000))


@asynccontextmanager
async def lifespan(app):
    if os.environ.get("SPIN") == "1":
        threading.Thread(target=spin, daemon=True).start()
    async with httpx.AsyncClient(timeout=5) as client:
        CLIENTS.append(client)
        yield
    stop.set()


app = FastAPI(lifespan=lifespan)


@app.get("/gather/{count}")
async def gather(count: int):
    answers = await asyncio.gather(
        *(CLIENTS[0].get(f"{UPSTREAM}/price/{i}") for i in range(count))
    )
    return {"codes": [a.status_code for a in answers]}


@app.get("/trickle")
async def trickle():
    async def body():
        for _ in range(40):  # 40 bytes, one every 0.25 s: 10 s in all
            yield b"x"
            await asyncio.sleep(0.25)

    return StreamingResponse(body())


@app.get("/big")
async def big():
    async def body():
        chunk = b"x" * 65536
        for _ in range(256):  # 16 MiB
            yield chunk

    return StreamingResponse(body())


@app.get("/empty")
async def empty():
    return Response(b"", status_code=200)


@app.get("/forever")
async def forever():
    async def body():
        while True:  # chunked, never ends
            yield b"x" * 65536
            await asyncio.sleep(0)

    return StreamingResponse(body())


@app.get("/bomb")
async def bomb():
    return Response(BOMB, headers={"content-encoding": "gzip"})


@app.get("/loop")
async def loop():
    return Response(b"", status_code=307, headers={"location": "/loop"})


@app.get("/big-header")
async def big_header():
    return Response(b"ok", headers={"x-big": "a" * (1024 * 1024)})


_routes = app


async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/cut":  # 10 bytes of 100, then closed
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
        )
        await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
        raise RuntimeError("cut mid-body")
    await _routes(scope, receive, send)
"""


def run_pytest(tmp_path: Path, ini: str, test: str, env: dict[str, str] | None = None):
    (tmp_path / "svc.py").write_text(APP)
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\nfanout_app = svc:app\nfanout_app_dir = {tmp_path}\npythonpath = {REPO}\n{ini}"
    )
    (tmp_path / "test_it.py").write_text(test)
    environ = {**os.environ, **(env or {})}
    environ.pop("PYTEST_ADDOPTS", None)
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            *NO_UNUSED_PLUGINS,
            "-rA",
        ],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - start


def test_request_timeout_is_a_deadline_for_the_whole_answer(tmp_path: Path) -> None:
    """One byte every 0.25 s keeps each read under the timeout: the answer as a whole is
    cut at the deadline, in `fanout.get` and in `fanout.measure` alike."""
    status, output, _ = run_pytest(
        tmp_path,
        "fanout_request_timeout = 1\n",
        """
import time
from pytest_fanout import MeasurementError
import pytest

def test_get(fanout):
    start = time.monotonic()
    with pytest.raises(MeasurementError) as info:
        fanout.get("/trickle")
    took = time.monotonic() - start
    assert took < 5, took  # the app takes 10 s: cut at 1 s (and one read at most)
    print("LINE:", str(info.value).splitlines()[0])

def test_measure(fanout):
    fanout.measure("/trickle", repeat=1, warmup=0, held_probe=False)
""",
    )
    assert "LINE: GET /trickle was still sending its answer 1 s after the request" in output
    assert "a deadline for the whole answer" in output
    assert "1 failed, 1 passed" in output, output
    assert "FAILED test_it.py::test_measure" in output
    assert "MeasurementError: GET /trickle was still sending its answer 1 s after" in output


def test_an_answer_past_max_answer_bytes_is_one_line_and_not_held(tmp_path: Path) -> None:
    status, output, _ = run_pytest(
        tmp_path,
        "fanout_max_answer_bytes = 1048576\n",
        """
import re
import pytest
from pytest_fanout import MeasurementError

def test_big(fanout):
    with pytest.raises(MeasurementError) as info:
        fanout.get("/big")
    line = str(info.value).splitlines()[0]
    print("LINE:", line)
    read = int(re.search(r"\\(([\\d,]+) read", line).group(1).replace(",", ""))
    assert 1048576 < read <= 1048576 + 2 * 65536  # stopped at the bound, not at 16 MiB

def test_small_still_reads(fanout):
    assert fanout.get("/empty").status_code == 200
""",
    )
    assert status == 0, output
    assert (
        "LINE: GET /big: the answer's body passed 1,048,576 bytes (" in output
        and "max_answer_bytes, --fanout-max-answer-bytes): not read further" in output
    ), output


def test_an_app_that_never_goes_idle_is_measured_without_its_structure(tmp_path: Path) -> None:
    """A thread at 100% CPU: the held probe gives up on the app's idleness (max_busy_s), the
    timed samples are taken, and the measurement says why it has no structure."""
    status, output, took = run_pytest(
        tmp_path,
        "",
        """
import pytest
from pytest_fanout.measurement import FanoutWarning

def test_busy(fanout):
    with pytest.warns(FanoutWarning, match="the app never went idle"):
        m = fanout.measure("/gather/4", repeat=2, warmup=1)
    assert m.structure == {}
    assert "structure not taken: the app never went idle" in m.structure_note
    assert "max_busy_s" in m.structure_note
    assert len(m.samples) == 2
    assert m.upstream_requests_per_sample == [4, 4]
    assert "structure=not-taken" in repr(m)
""",
        env={"SPIN": "1"},
    )
    assert status == 0, output
    assert took < 60, took  # it used to end in a 500, or in 40 s with a wrong blame


def test_hostile_answers_are_one_line_each_and_held_to_the_bound(tmp_path: Path) -> None:
    """The adversarial pass (docs/reliability.md): a chunked answer that never ends, a
    16 KiB gzip body that decodes to 16 MiB (httpx2 decodes it whole when the answer is
    built: the bound counts decoded bytes too), a body cut mid-way, a redirect loop, a 1 MiB
    header, and a 0-byte 200 (measured as usual)."""
    status, output, _ = run_pytest(
        tmp_path,
        "fanout_max_answer_bytes = 1048576\nfanout_request_timeout = 10\n",
        """
import resource
import pytest
from pytest_fanout import MeasurementError

@pytest.mark.parametrize("path", ["/forever", "/bomb", "/cut", "/loop", "/big-header"])
def test_one_line(fanout, path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(MeasurementError) as info:
        fanout.measure(path, repeat=1, warmup=0)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mib < 12, grew_mib  # never the whole 16 MiB (nor the endless one)
    print("LINE", path, str(info.value).splitlines()[0])

def test_empty(fanout):
    m = fanout.measure("/empty", repeat=2, warmup=0)
    assert len(m.samples) == 2 and len(m.first_byte_per_sample) == 2
    assert all(0 < b <= s for b, s in zip(m.first_byte_per_sample, m.samples))
""",
    )
    assert status == 0, output
    lines = {line.split()[1]: line for line in output.splitlines() if line.startswith("LINE ")}
    bound = "the answer's body passed 1,048,576 bytes ("
    assert bound in lines["/forever"], lines
    assert bound in lines["/bomb"] and "read once decoded" in lines["/bomb"], lines
    assert "GET /cut: the app did not answer: RemoteProtocolError" in lines["/cut"], lines
    assert "answered 307 (a redirect to /loop; the harness does not follow it)" in lines["/loop"]
    assert "GET /big-header: the app did not answer" in lines["/big-header"], lines
