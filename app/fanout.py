"""The fan-out strategies: plain functions that take a client and the work.

They know nothing of FastAPI, so they are unit-tested with a mocked transport
and reused by the routes in `app.main`. The gathered strategies take either the
shared `httpx2.AsyncClient` or, on aiohttp's engine, the `aiohttp.ClientSession`
under it (`fetch_on_session`: the same pool without httpx2's request layer, the
cost of a wide gather; a failure gets the name httpx2 would give it). Every
call ends as a `CallOutcome`: a failed call is reported in its slot, never
raised, so one bad upstream call cannot turn a fan-out into a 500.
`deadline_s` is what is left of the request's deadline when the strategy
starts (the route has already spent some of it waiting for a thread); waiting
for the semaphore or for a pooled connection is inside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import httpx2
import yarl

from .transport import error_kind

DEADLINE_REASON = "deadline exceeded"


@dataclass(frozen=True)
class CallOutcome:
    """What one upstream call ended with."""

    status: int | None = None
    #: The reason a client may see: an exception's type or "HTTP 503", never an address.
    error: str | None = None
    #: True when the upstream could not be reached at all (connection refused).
    unreachable: bool = False
    #: The full reason (it may name the upstream's host): for the app's log only.
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


NOT_STARTED = CallOutcome(error=DEADLINE_REASON)


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _outcome(status: int) -> CallOutcome:
    if 200 <= status < 300:
        return CallOutcome(status=status)
    return CallOutcome(status=status, error=f"HTTP {status}")


def _failure(exc: Exception) -> CallOutcome:
    if isinstance(exc, aiohttp.ClientError | TimeoutError):  # a direct call on the session
        kind = error_kind(exc)
        name = kind.__name__
        detail = f"{name} ({_detail(exc)})"  # aiohttp's own words, for the log
        return CallOutcome(error=name, unreachable=kind is httpx2.ConnectError, detail=detail)
    if isinstance(exc, httpx2.ConnectError):  # refused or unreachable: no upstream there
        return CallOutcome(error="ConnectError", unreachable=True, detail=f"ConnectError: {exc}")
    return CallOutcome(error=type(exc).__name__, detail=_detail(exc))


#: An upstream URL: the routes pass URLs they built once (no parse per call), an
#: `httpx2.URL` for an httpx2 client, a `yarl.URL` for the aiohttp session.
Url = httpx2.URL | yarl.URL | str
#: What the gathered strategies call on (see the module's docstring).
AsyncCaller = httpx2.AsyncClient | aiohttp.ClientSession


async def fetch(client: AsyncCaller, url: Url) -> CallOutcome:
    """One upstream call on the shared async client (or its engine's session), as an outcome."""
    if isinstance(client, aiohttp.ClientSession):
        return await fetch_on_session(client, url)
    try:
        response = await client.get(url)  # type: ignore[arg-type]
    except Exception as exc:  # any failure is this call's outcome, not the fan-out's
        return _failure(exc)
    return _outcome(response.status_code)


async def fetch_on_session(session: aiohttp.ClientSession, url: Url) -> CallOutcome:
    """One upstream call straight on aiohttp's session: the answer read whole, redirects
    not followed (as the httpx2 client), the session's timeouts and pool bound."""
    if isinstance(url, httpx2.URL):
        url = str(url)
    try:
        async with session.get(url, allow_redirects=False) as response:
            await response.read()
    except Exception as exc:  # any failure is this call's outcome, not the fan-out's
        return _failure(exc)
    return _outcome(response.status)


async def gather_all(
    client: AsyncCaller,
    urls: Sequence[Url],
    *,
    deadline_s: float,
) -> list[CallOutcome]:
    """All calls at once with `asyncio.gather`: wall time is about the slowest call."""
    outcomes = [NOT_STARTED] * len(urls)

    async def call(i: int, url: Url) -> None:
        outcomes[i] = await fetch(client, url)

    if deadline_s <= 0:
        return outcomes  # the request spent its whole deadline before it got here
    try:
        async with asyncio.timeout(deadline_s):
            await asyncio.gather(*(call(i, url) for i, url in enumerate(urls)))
    except TimeoutError:
        pass  # unfinished slots keep NOT_STARTED: "deadline exceeded"
    return outcomes


async def gather_bounded(
    client: AsyncCaller,
    urls: Sequence[Url],
    max_concurrent: int,
    *,
    deadline_s: float,
) -> list[CallOutcome]:
    """Gather behind `asyncio.Semaphore(max_concurrent)`: never more than that in flight."""
    if max_concurrent < 1:
        raise ValueError("max_concurrent must be at least 1")
    outcomes = [NOT_STARTED] * len(urls)
    semaphore = asyncio.Semaphore(max_concurrent)

    async def call(i: int, url: Url) -> None:
        async with semaphore:
            outcomes[i] = await fetch(client, url)

    if deadline_s <= 0:
        return outcomes  # the request spent its whole deadline before it got here
    try:
        async with asyncio.timeout(deadline_s):
            await asyncio.gather(*(call(i, url) for i, url in enumerate(urls)))
    except TimeoutError:
        pass
    return outcomes


def call_in_sequence(
    client: httpx2.Client,
    urls: Sequence[Url],
    *,
    deadline_s: float,
) -> list[CallOutcome]:
    """One call after another on a sync client: wall time is the sum of the calls.

    Run it in a thread (a `def` route). Called from `async def` it blocks the
    event loop for the whole fan-out: that is the `/blocking` anti-pattern.
    """
    outcomes = [NOT_STARTED] * len(urls)
    end = time.monotonic() + deadline_s
    for i, url in enumerate(urls):
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        timeout = min(client.timeout.read or remaining, remaining)
        try:
            response = client.get(url, timeout=timeout)
        except Exception as exc:
            outcomes[i] = _failure(exc)
            continue
        outcomes[i] = _outcome(response.status_code)
    return outcomes
