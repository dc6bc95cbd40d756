"""What the benchmark measures: widths, delays, repeats, the engines and the raw clients."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

NS = (10, 100, 1000)
DELAYS_MS = (50.0, 0.0)
#: The bound of /async_sem and of the raw "gather + Semaphore" baselines.
SEM = 20
#: Sequential patterns stop here at a non-zero delay (1000 x 50 ms is 50 s by definition).
SEQUENTIAL_CAP = 100
#: Repeats per row; fewer when one sample is slow (see `rows.repeats_after`).
REPEATS = 7
#: No single fan-out may run longer than this (httpx's default pool can take ~20 s at 1000).
SAMPLE_TIMEOUT_S = 60.0
#: The app's engines (FANOUT_TRANSPORT), the default first.
APP_TRANSPORTS = ("aiohttp", "httpx2")
#: The pool of the app (FANOUT_POOL_SIZE default) and of the "same pool" raw baseline.
APP_POOL = 1000

#: Raw baselines: kind -> (client, pattern, concurrency of the pattern or None for n).
RAW_CLIENTS: dict[str, tuple[str, str, int | None]] = {
    "aiohttp": ("raw aiohttp (default connector)", "gather", None),
    "aiohttp-pool": (f"raw aiohttp (limit={APP_POOL})", "gather", None),
    "aiohttp-sem": ("raw aiohttp (default connector)", f"gather + Semaphore({SEM})", SEM),
    "httpx": ("plain httpx.AsyncClient", "gather", None),
    "httpx-sem": ("plain httpx.AsyncClient", f"gather + Semaphore({SEM})", SEM),
    "httpx2": ("plain httpx2.AsyncClient", "gather", None),
    "httpx2-sem": ("plain httpx2.AsyncClient", f"gather + Semaphore({SEM})", SEM),
    "httpx2-sync": ("plain httpx2.Client", "sequential", 1),
}
