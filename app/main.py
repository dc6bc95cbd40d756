"""The reference fan-out service: three patterns done right, one done wrong on purpose.

Run it with `uvicorn app.main:app`; configure it with FANOUT_* environment
variables (see `app.settings`). Every fan-out answer has the same shape,
`FanoutAnswer`, whatever the pattern.
"""

import gc
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from pydantic import BaseModel, Field

from . import fanout
from .clients import build_async_client, build_sync_client
from .fanout import CallOutcome
from .settings import Settings


class ErrorSummary(BaseModel):
    """Failed upstream calls: the full count and the first few reasons."""

    count: int = Field(description="How many upstream calls failed.")
    first: list[str] = Field(description="The first few reasons, as 'call I: reason'.")


class FanoutAnswer(BaseModel):
    """The answer of every fan-out route."""

    message: str
    pattern: str = Field(description="sync, async, async_sem or blocking.")
    n: int = Field(description="Upstream calls made.")
    max_concurrent: int | None = Field(
        default=None, description="The semaphore's bound (async_sem only)."
    )
    elapsed_s: float = Field(description="Wall time of the fan-out, in seconds.")
    status_codes: list[int | None] = Field(
        description="One per call, in order; null where no answer came back."
    )
    errors: ErrorSummary


class Health(BaseModel):
    status: str


log = logging.getLogger("app.fanout")

UNREACHABLE = {502: {"description": "Every upstream call failed: the upstream is unreachable."}}


def summarise(
    pattern: str,
    outcomes: list[CallOutcome],
    elapsed_s: float,
    settings: Settings,
    max_concurrent: int | None = None,
) -> FanoutAnswer:
    """Turn outcomes into the answer; a 502 when no call could reach the upstream."""
    failed = [(i, o) for i, o in enumerate(outcomes) if not o.ok]
    if failed:
        # The full reasons (with the upstream's address) go to the log, not to the client.
        first, outcome = failed[0]
        log.warning(
            "%s: %d of %d upstream calls failed; call %d: %s",
            pattern, len(failed), len(outcomes), first, outcome.detail or outcome.error,
        )
    if outcomes and all(o.unreachable for o in outcomes):
        raise HTTPException(
            status_code=502,
            detail=f"the upstream is unreachable: every call failed with {outcomes[0].error}",
        )
    return FanoutAnswer(
        message=f"{len(outcomes)} upstream calls ({pattern}): "
        f"{len(outcomes) - len(failed)} succeeded, {len(failed)} failed",
        pattern=pattern,
        n=len(outcomes),
        max_concurrent=max_concurrent,
        elapsed_s=round(elapsed_s, 6),
        status_codes=[o.status for o in outcomes],
        errors=ErrorSummary(
            count=len(failed),
            first=[f"call {i}: {o.error}" for i, o in failed[: settings.max_error_reasons]],
        ),
    )


@contextmanager
def tuned_gc(threshold: int) -> Iterator[None]:
    """Collect young objects far less often, and never rescan the start-up heap.

    A wide fan-out keeps about 100 GC-tracked objects alive per call in flight,
    so CPython's default threshold (700) runs a FULL collection on every
    /async/1000: about 30% of the app's CPU (benchmarks/physical_limit.py).
    Undone on shutdown; threshold 0 leaves the GC alone.
    """
    if threshold <= 0:
        yield
        return
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; path bounds come from `settings`, so the OpenAPI schema shows them."""
    settings = settings or Settings.from_env()
    overhead_s = settings.call_overhead_ms / 1000

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # ONE client of each kind for the whole process, closed on shutdown.
        with build_sync_client(settings) as sync_client:
            async with build_async_client(settings) as async_client:
                app.state.sync_client = sync_client
                app.state.async_client = async_client
                with tuned_gc(settings.gc_threshold):
                    yield

    app = FastAPI(
        title="fan-out reference service",
        summary="Sequential, gathered and bounded fan-out to one configured upstream.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings

    def async_client(request: Request) -> httpx.AsyncClient:
        return request.app.state.async_client

    def sync_client(request: Request) -> httpx.Client:
        return request.app.state.sync_client

    AsyncClient = Annotated[httpx.AsyncClient, Depends(async_client)]
    SyncClient = Annotated[httpx.Client, Depends(sync_client)]
    N = Annotated[
        int, Path(ge=1, le=settings.max_n, description=f"Upstream calls, 1 to {settings.max_n}.")
    ]
    MaxConcurrent = Annotated[
        int,
        Path(
            ge=1,
            le=settings.max_concurrency,
            description=f"Calls in flight at most, 1 to {settings.max_concurrency}.",
        ),
    ]

    def work(n: int) -> list[str]:
        # Only the configured upstream, only paths the app builds: nothing from the request.
        return [f"{settings.upstream_url}/items/{i}" for i in range(n)]

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/sync/{n}", response_model=FanoutAnswer, responses=UNREACHABLE)
    def sync_route(n: N, client: SyncClient) -> FanoutAnswer:
        """n calls one after another with a sync client, in the threadpool (a `def` route)."""
        start = time.perf_counter()
        outcomes = fanout.call_in_sequence(
            client, work(n), deadline_s=settings.deadline_s, overhead_s=overhead_s
        )
        return summarise("sync", outcomes, time.perf_counter() - start, settings)

    @app.get("/async/{n}", response_model=FanoutAnswer, responses=UNREACHABLE)
    async def async_route(n: N, client: AsyncClient) -> FanoutAnswer:
        """n calls at once with `asyncio.gather` over the shared `httpx.AsyncClient`."""
        start = time.perf_counter()
        outcomes = await fanout.gather_all(
            client, work(n), deadline_s=settings.deadline_s, overhead_s=overhead_s
        )
        return summarise("async", outcomes, time.perf_counter() - start, settings)

    @app.get(
        "/async_sem/{n}/{max_concurrent}", response_model=FanoutAnswer, responses=UNREACHABLE
    )
    async def async_sem_route(
        n: N, max_concurrent: MaxConcurrent, client: AsyncClient
    ) -> FanoutAnswer:
        """n calls, at most `max_concurrent` in flight, behind an `asyncio.Semaphore`."""
        start = time.perf_counter()
        outcomes = await fanout.gather_bounded(
            client,
            work(n),
            max_concurrent,
            deadline_s=settings.deadline_s,
            overhead_s=overhead_s,
        )
        elapsed = time.perf_counter() - start
        return summarise("async_sem", outcomes, elapsed, settings, max_concurrent)

    @app.get("/blocking/{n}", response_model=FanoutAnswer, responses=UNREACHABLE)
    async def blocking_route(n: N, client: SyncClient) -> FanoutAnswer:
        """ANTI-PATTERN, kept on purpose: a sync client called inside `async def`.

        Every call blocks the event loop, so no other request (not even
        /healthz) is served meanwhile. The harness's loop probe must flag it.
        """
        start = time.perf_counter()
        outcomes = fanout.call_in_sequence(
            client, work(n), deadline_s=settings.deadline_s, overhead_s=overhead_s
        )
        return summarise("blocking", outcomes, time.perf_counter() - start, settings)

    return app


app = create_app()
