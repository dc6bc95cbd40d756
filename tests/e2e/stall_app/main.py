"""Stalls whose truth is known: a `time.sleep` in an async handler beside a client built per
request (the neighbouring line), its fix, blocking calls named by what they call, and a
route with no blocking code at all (its loop lag, beside CPU hogs, is the runner's)."""

import asyncio
import os
import socket
import threading
import time

import httpx
import requests
from fastapi import FastAPI

MAIN = os.environ["FANOUT_UPSTREAM_URL"]
N = 4

app = FastAPI()
shared = httpx.AsyncClient(timeout=10)
#: Held by a thread for a moment on every /lock request: the handler waits for it.
_LOCK = threading.Lock()


@app.get("/nap")
async def nap() -> dict:
    # The client built here holds the loop too (its TLS context: 66 ms on a runner busy at
    # -n 4), so the sleep is made the clearly longer of the two: the stall is the sleep's.
    async with httpx.AsyncClient(timeout=10) as client:
        time.sleep(0.15)
        answer = await client.get(f"{MAIN}/item/0")
    return {"status": answer.status_code}


@app.get("/nap-fixed")
async def nap_fixed() -> dict:
    await asyncio.sleep(0.15)
    answer = await shared.get(f"{MAIN}/item/0")
    return {"status": answer.status_code}


@app.get("/recv")
async def recv() -> dict:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        threading.Timer(0.08, theirs.sendall, args=(b"x",)).start()
        data = mine.recv(1)  # waits for the timer's byte
    return {"got": len(data)}


def _hold() -> None:
    time.sleep(0.08)
    _LOCK.release()


@app.get("/lock")
async def lock() -> dict:
    _LOCK.acquire()
    threading.Thread(target=_hold).start()
    _LOCK.acquire()  # waits until _hold releases it
    _LOCK.release()
    return {}


@app.get("/via-requests")
async def via_requests() -> dict:
    statuses = []
    for i in range(3):  # three upstream delays: a stall the sampler sees several times
        statuses.append(requests.get(f"{MAIN}/item/{i}", timeout=10).status_code)
    return {"statuses": statuses}


@app.get("/fanout")
async def fanout() -> dict:
    answers = await asyncio.gather(*(shared.get(f"{MAIN}/item/{i}") for i in range(N)))
    return {"statuses": [a.status_code for a in answers]}


def _sum_holding_the_gil() -> int:
    # The builtin sum of a range runs in C and never lets the GIL go: ~150 ms on a quiet runner.
    return sum(range(10_000_000))


@app.get("/gil-thread")
async def gil_thread() -> dict:
    # No blocking code on the loop: another thread holds the GIL, and the loop waits for it.
    total = await asyncio.get_running_loop().run_in_executor(None, _sum_holding_the_gil)
    return {"total": total}
