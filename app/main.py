"""The reference fan-out service: three patterns done right, one done wrong on purpose.

Run it with `uvicorn app.main:app`; configure it with FANOUT_* environment
variables (see `app.settings`). Every fan-out answer has the same shape,
`FanoutAnswer`, whatever the pattern. A request is admitted first (see
`app.admission`): past FANOUT_MAX_PENDING_CALLS it is shed with 503.
"""

import gc
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated

import aiohttp
import httpx2
import yarl
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from pydantic import BaseModel, Field

from . import fanout
from .admission import Admission, Ticket
from .clients import SYNC_POOL_SIZE, upstream_clients
from .fanout import AsyncCaller, CallOutcome
from .settings import Settings, SettingsError
from .threads import DeadlineThreads


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


class Stats(BaseModel):
    """What admission control has seen since the process started."""

    pending_calls: int = Field(description="Upstream calls queued or in flight now.")
    max_pending_calls: int = Field(description="The bound (FANOUT_MAX_PENDING_CALLS).")
    admitted: int = Field(description="Requests admitted.")
    shed: int = Field(description="Requests answered 503 at once: the bound was reached.")
    failed_calls: int = Field(description="Upstream calls that failed (each also logged).")


@dataclass(frozen=True)
class Work:
    """An admitted fan-out request: the upstream URLs to call and its admission ticket."""

    urls: list[httpx2.URL]
    ticket: Ticket


@dataclass(frozen=True)
class BoundedWork(Work):
    """The same, with the semaphore's bound the request asked for."""

    max_concurrent: int


log = logging.getLogger("app.fanout")

ANSWERS = {
    502: {"description": "Every upstream call failed: the upstream is unreachable."},
    503: {"description": "Shed at once: the process has too many upstream calls pending."},
}


def summarise(
    pattern: str,
    outcomes: list[CallOutcome],
    elapsed_s: float,
    settings: Settings,
    admission: Admission,
    max_concurrent: int | None = None,
) -> FanoutAnswer:
    """Turn outcomes into the answer; a 502 when no call could reach the upstream."""
    failed = [(i, o) for i, o in enumerate(outcomes) if not o.ok]
    if failed:
        # One counted line per fan-out, never a traceback; the full reason (with the
        # upstream's address) goes to the log, not to the client.
        total = admission.count_failed(len(failed))
        first, outcome = failed[0]
        log.warning(
            "%s: %d of %d upstream calls failed (%d since start); call %d: %s",
            pattern,
            len(failed),
            len(outcomes),
            total,
            first,
            outcome.detail or outcome.error,
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
    /async/1000: about 30% of the app's CPU (benchmarks/physical_limit/).
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
    admission = Admission(settings.max_pending_calls, settings.deadline_s)
    # Only the configured upstream, only paths the app builds: nothing from the request.
    # Built once: httpx2 takes a ready `URL` as it is, where a string is parsed per call.
    item_urls = [httpx2.URL(f"{settings.upstream_url}/items/{i}") for i in range(settings.max_n)]
    # The same URLs as aiohttp's session takes them, for the gathered routes' direct calls.
    session_urls = [yarl.URL(str(url), encoded=True) for url in item_urls]

    def urls_for(client: AsyncCaller, work: Work) -> list[httpx2.URL] | list[yarl.URL]:
        """The work's URLs in the type `client` takes as it is: no parse per call."""
        if isinstance(client, aiohttp.ClientSession):
            return session_urls[: len(work.urls)]
        return work.urls

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # ONE client of each kind for the whole process, closed on shutdown.
        async with upstream_clients(settings) as clients:
            # The gathered routes call aiohttp's session directly when the engine is
            # aiohttp (app/clients.py says why), else the httpx2 client.
            app.state.async_client = clients.session or clients.async_client
            app.state.sync_client = clients.sync_client
            with tuned_gc(settings.gc_threshold):
                yield

    app = FastAPI(
        title="fan-out reference service",
        summary="Sequential, gathered and bounded fan-out to one configured upstream.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.admission = admission

    # Async on purpose: a `def` dependency is a trip through the threadpool, where an
    # admitted request would wait behind the sequential fan-outs, outside any deadline.
    async def async_client(request: Request) -> AsyncCaller:
        return request.app.state.async_client

    async def sync_client(request: Request) -> httpx2.Client:
        return request.app.state.sync_client

    threads = DeadlineThreads(SYNC_POOL_SIZE)

    AsyncClient = Annotated[AsyncCaller, Depends(async_client)]
    SyncClient = Annotated[httpx2.Client, Depends(sync_client)]
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

    @contextmanager
    def hold(n: int) -> Iterator[Ticket]:
        ticket = admission.admit(n)
        if ticket is None:
            raise HTTPException(
                status_code=503,
                detail=f"overloaded: {n} more upstream calls would pass the bound of "
                f"{settings.max_pending_calls}; retry after {settings.retry_after_s} s",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        try:
            yield ticket
        finally:
            admission.release(ticket)

    # The admission is a dependency: async, so it runs on the event loop before a `def`
    # route waits for a thread (a shed request never queues; the deadline counts the wait).
    # It owns the path parameters, so a bad one is a 422 before anything is admitted.
    async def admitted(n: N) -> AsyncIterator[Work]:
        with hold(n) as ticket:
            yield Work(item_urls[:n], ticket)

    async def admitted_bounded(n: N, max_concurrent: MaxConcurrent) -> AsyncIterator[BoundedWork]:
        with hold(n) as ticket:
            yield BoundedWork(item_urls[:n], ticket, max_concurrent)

    Admitted = Annotated[Work, Depends(admitted)]
    AdmittedBounded = Annotated[BoundedWork, Depends(admitted_bounded)]

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/stats", response_model=Stats)
    async def stats() -> Stats:
        """Admission control's counters: pending calls, admitted and shed requests."""
        return Stats(**admission.snapshot())

    @app.get("/sync/{n}", response_model=FanoutAnswer, responses=ANSWERS)
    async def sync_route(work: Admitted, client: SyncClient) -> FanoutAnswer:
        """n calls one after another with a sync client, in a worker thread.

        The wait for a free thread is inside the deadline: a request that gets none in
        time answers at its deadline, every call "deadline exceeded" (`app.threads`)."""
        start = time.perf_counter()
        ticket = work.ticket
        outcomes = await threads.run(
            ticket.remaining_s,
            lambda: fanout.call_in_sequence(client, work.urls, deadline_s=ticket.remaining_s()),
            default=[fanout.NOT_STARTED] * len(work.urls),
        )
        return summarise("sync", outcomes, time.perf_counter() - start, settings, admission)

    @app.get("/async/{n}", response_model=FanoutAnswer, responses=ANSWERS)
    async def async_route(work: Admitted, client: AsyncClient) -> FanoutAnswer:
        """n calls at once with `asyncio.gather` over the shared client (aiohttp's session)."""
        start = time.perf_counter()
        urls = urls_for(client, work)
        outcomes = await fanout.gather_all(client, urls, deadline_s=work.ticket.remaining_s())
        return summarise("async", outcomes, time.perf_counter() - start, settings, admission)

    @app.get("/async_sem/{n}/{max_concurrent}", response_model=FanoutAnswer, responses=ANSWERS)
    async def async_sem_route(work: AdmittedBounded, client: AsyncClient) -> FanoutAnswer:
        """n calls, at most `max_concurrent` in flight, behind an `asyncio.Semaphore`."""
        start = time.perf_counter()
        outcomes = await fanout.gather_bounded(
            client,
            urls_for(client, work),
            work.max_concurrent,
            deadline_s=work.ticket.remaining_s(),
        )
        elapsed = time.perf_counter() - start
        return summarise("async_sem", outcomes, elapsed, settings, admission, work.max_concurrent)

    @app.get("/blocking/{n}", response_model=FanoutAnswer, responses=ANSWERS)
    async def blocking_route(work: Admitted, client: SyncClient) -> FanoutAnswer:
        """ANTI-PATTERN, kept on purpose: a sync client called inside `async def`.

        Every call blocks the event loop, so no other request (not even
        /healthz) is served meanwhile. The harness's loop probe must flag it.
        """
        start = time.perf_counter()
        outcomes = fanout.call_in_sequence(client, work.urls, deadline_s=work.ticket.remaining_s())
        return summarise("blocking", outcomes, time.perf_counter() - start, settings, admission)

    return app


def _app_from_env() -> FastAPI:
    """The app `uvicorn app.main:app` serves; a bad setting is one line and exit status 1."""
    try:
        return create_app()
    except SettingsError as exc:
        raise SystemExit(f"app: refusing to start: {exc}") from None


app = _app_from_env()
