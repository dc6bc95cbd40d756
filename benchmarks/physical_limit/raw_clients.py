"""The raw baselines: the same fan-outs made directly by aiohttp, httpx or httpx2.

Each kind runs in a fresh process (`python -m benchmarks.physical_limit.raw_clients
--kind K ...`, on uvloop like the app), so its CPU time is its own; the process
prints one JSON document with every sample. `measure_raw` starts it and reads it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx2

from benchmarks.physical_limit.plan import (
    APP_POOL,
    RAW_CLIENTS,
    REPO,
    SAMPLE_TIMEOUT_S,
    SEM,
    SEQUENTIAL_CAP,
)
from benchmarks.physical_limit.rows import Row, print_row, repeats_after
from pytest_fanout.servers.stack import StubUpstreamServer
from pytest_fanout.servers.upstream import TOKEN_ENV

Call = Callable[[str], Awaitable[int | None]]


def _aiohttp_client(kind: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import aiohttp

    limit = APP_POOL if kind == "aiohttp-pool" else 100  # 100 is aiohttp's default
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))

    async def one(target: str) -> int | None:
        try:
            async with session.get(target) as answer:
                await answer.read()
                return answer.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    return one, session.close


def _httpx_client(kind: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """Plain `httpx.AsyncClient()` or `httpx2.AsyncClient()`: all defaults, as a user writes."""
    library = __import__("httpx2" if kind.startswith("httpx2") else "httpx")
    client = library.AsyncClient()

    async def one(target: str) -> int | None:
        try:
            return (await client.get(target)).status_code
        except library.HTTPError:
            return None

    return one, client.aclose


async def _async_samples(kind: str, url: str, ns: Sequence[int], repeats: int) -> list[dict]:
    """The raw client's fan-outs, timed and CPU-counted, the stub's gauge read after each."""
    one, close = _aiohttp_client(kind) if kind.startswith("aiohttp") else _httpx_client(kind)
    semaphore = asyncio.Semaphore(SEM) if kind.endswith("-sem") else None

    async def bounded(target: str) -> int | None:
        if semaphore is None:
            return await one(target)
        async with semaphore:
            return await one(target)

    async def fan_out(urls: list[str]) -> list[int | None]:
        tasks = [asyncio.ensure_future(bounded(u)) for u in urls]
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                return list(await asyncio.gather(*tasks))
        except TimeoutError:
            return [t.result() if t.done() and not t.cancelled() else None for t in tasks]

    out: list[dict] = []
    try:
        with _control(url) as ctl:
            for n in ns:
                urls = [f"{url}/items/{i}" for i in range(n)]
                # Warm-up, not counted: the whole pool for aiohttp's (as the app's is warm).
                await fan_out(urls if kind.startswith("aiohttp") else urls[: min(n, 100)])
                samples: list[dict] = []
                total = repeats
                while len(samples) < total:
                    ctl.post("reset").raise_for_status()
                    cpu0, start = time.process_time(), time.perf_counter()
                    codes = await fan_out(urls)
                    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
                    ok = sum(1 for c in codes if c is not None and 200 <= c < 300)
                    peak = ctl.get("stats").raise_for_status().json()["peak_inflight"]
                    samples.append({"wall": wall, "ok": ok, "peak": peak, "cpu": cpu})
                    total = repeats_after(samples[0]["wall"], repeats)
                out.append({"n": n, "samples": samples})
    finally:
        await close()
    return out


def _control(url: str) -> httpx2.Client:
    """The stub's control paths, with the token the parent handed over."""
    token = os.environ[TOKEN_ENV]
    return httpx2.Client(
        base_url=url + "/__upstream__/", timeout=10, headers={"Authorization": f"Bearer {token}"}
    )


def _sync_samples(url: str, ns: Sequence[int], repeats: int) -> list[dict]:
    """Plain sequential `httpx2.Client`: the baseline of /sync (the app's sync client)."""
    out: list[dict] = []
    with httpx2.Client() as client, _control(url) as ctl:
        for n in ns:
            urls = [f"{url}/items/{i}" for i in range(n)]
            client.get(urls[0])  # warm-up: open the connection
            samples: list[dict] = []
            total = repeats
            while len(samples) < total:
                ctl.post("reset").raise_for_status()
                cpu0, start = time.process_time(), time.perf_counter()
                ok = 0
                for target in urls:
                    with contextlib.suppress(httpx2.HTTPError):
                        ok += client.get(target).is_success
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
                peak = ctl.get("stats").raise_for_status().json()["peak_inflight"]
                samples.append({"wall": wall, "ok": ok, "peak": peak, "cpu": cpu})
                total = repeats_after(samples[0]["wall"], repeats)
            out.append({"n": n, "samples": samples})
    return out


def measure_raw(
    upstream: StubUpstreamServer, kind: str, *, ns: Sequence[int], repeats: int
) -> list[Row]:
    """Run one raw client in its own process at every n of the stub's current delay."""
    client, pattern, fixed = RAW_CLIENTS[kind]
    delay_ms = upstream.behaviour().delay_ms
    ns = [n for n in ns if not (fixed == 1 and delay_ms > 0 and n > SEQUENTIAL_CAP)]
    command = [sys.executable, "-m", __name__, "--kind", kind, "--url", upstream.url]
    command += ["--ns", ",".join(map(str, ns)), "--repeats", str(repeats)]
    budget = SAMPLE_TIMEOUT_S * (repeats + 1) * len(ns) + 30
    env = {**os.environ, TOKEN_ENV: upstream.token}  # the stub's control token, not in argv
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        stdout, _ = proc.communicate(timeout=budget)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"raw worker {kind} failed with status {proc.returncode}")
    rows = []
    for item in json.loads(stdout.strip().splitlines()[-1]):
        n = item["n"]
        row = Row(client, pattern, n, delay_ms, min(n, fixed or n))
        for sample in item["samples"]:
            row.walls.append(sample["wall"])
            row.ok.append(sample["ok"])
            row.peaks.append(sample["peak"])
            row.cpu_s += sample["cpu"]
        rows.append(row)
        print_row(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """The worker process: one kind, every n, one JSON document on stdout."""
    parser = argparse.ArgumentParser(description="one raw client's fan-outs (a worker)")
    parser.add_argument("--kind", choices=sorted(RAW_CLIENTS), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--ns", required=True)
    parser.add_argument("--repeats", type=int, required=True)
    args = parser.parse_args(argv)
    ns = [int(n) for n in args.ns.split(",")]
    if args.kind.endswith("-sync"):
        result = _sync_samples(args.url, ns, args.repeats)
    else:
        import uvloop  # the app runs on uvloop: so do its baselines

        result = uvloop.run(_async_samples(args.kind, args.url, ns, args.repeats))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
