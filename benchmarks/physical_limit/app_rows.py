"""The app's rows: every route of one real app process, its CPU read from /proc."""

from __future__ import annotations

import time
from collections.abc import Sequence

import httpx2

from benchmarks.physical_limit.plan import REPO, SAMPLE_TIMEOUT_S, SEM, SEQUENTIAL_CAP
from benchmarks.physical_limit.rows import Row, print_row, repeats_after
from benchmarks.procfs import cpu_seconds
from pytest_fanout.limits import DEFAULT_APP
from pytest_fanout.servers.stack import AppServer, StubUpstreamServer


def app_label(transport: str, default: str) -> str:
    """The `client` column of an app row."""
    return f"app ({transport}{', default' if transport == default else ''})"


def app_routes(
    transport: str, default: str, delay_ms: float, ns: Sequence[int]
) -> list[tuple[str, str, int, int]]:
    """(pattern, path, n, concurrency) to measure on an app with this engine."""
    routes: list[tuple[str, str, int, int]] = []
    for n in ns:
        routes.append(("async", f"/async/{n}", n, n))
        routes.append((f"async_sem (c={SEM})", f"/async_sem/{n}/{SEM}", n, min(n, SEM)))
    if transport == default:  # the sync client has no engine to choose
        for n in ns:
            if delay_ms > 0 and n > SEQUENTIAL_CAP:
                continue
            routes.append(("sync", f"/sync/{n}", n, 1))
            routes.append(("blocking", f"/blocking/{n}", n, 1))
    return routes


def measure_route(
    client: httpx2.Client,
    app: AppServer,
    upstream: StubUpstreamServer,
    row: Row,
    path: str,
    repeats: int,
) -> Row:
    """GET `path` on the app process, one sample at a time, reading its CPU and the gauge."""
    assert app.pid is not None
    total = repeats
    while len(row.walls) < total:
        upstream.reset()
        cpu0 = cpu_seconds(app.pid)
        start = time.perf_counter()
        response = client.get(app.url + path)
        wall = time.perf_counter() - start
        cpu1 = cpu_seconds(app.pid)
        response.raise_for_status()
        codes = response.json()["status_codes"]
        row.walls.append(wall)
        row.ok.append(sum(1 for c in codes if c is not None and 200 <= c < 300))
        row.peaks.append(upstream.stats()["peak_inflight"])
        row.cpu_s += cpu1 - cpu0
        if len(row.walls) == 1:
            total = repeats_after(wall, repeats)
    return row


def measure_app(
    upstream: StubUpstreamServer,
    transport: str,
    default: str,
    *,
    ns: Sequence[int],
    delays_ms: Sequence[float],
    repeats: int,
) -> list[Row]:
    """Every route of one app process on `transport`, at each delay."""
    label = app_label(transport, default)
    rows: list[Row] = []
    app = AppServer(
        DEFAULT_APP,
        upstream_url=upstream.url,
        env={"FANOUT_TRANSPORT": transport, "FANOUT_POOL_SIZE": "1000"},  # the same pool
        app_dir=REPO,
    )
    try:
        app.start()
        with httpx2.Client(timeout=SAMPLE_TIMEOUT_S * 2) as client:
            for delay_ms in delays_ms:
                upstream.configure(delay_ms=delay_ms)
                # Warm every pool once: the widest async fan-out, the sync client's one.
                client.get(app.url + f"/async/{max(ns)}").raise_for_status()
                client.get(app.url + "/sync/2").raise_for_status()
                for pattern, path, n, concurrency in app_routes(transport, default, delay_ms, ns):
                    row = Row(label, pattern, n, delay_ms, concurrency)
                    rows.append(measure_route(client, app, upstream, row, path, repeats))
                    print_row(row)
    finally:
        app.stop()
    return rows
