"""httpx2's own pool with its waiters queued in front of it, so the deadline holds.

httpx2's pool does work proportional to its waiting requests on every
operation (encode/httpx#3215). Under a flood of `/async/1000` with
FANOUT_TRANSPORT=httpx2, 4000 calls waited inside it: the event loop spent
the whole 2 s deadline in pool bookkeeping (the upstream saw no call at all),
then cancelling the waiters took 3 s more, so answers came at 5-6 s with
every call failed. Here a call first takes one of `max_in_flight` places
from an asyncio semaphore (O(1) per waiter, first come first served), within
the request's pool timeout (a `PoolTimeout` past it, as httpx2 raises), and
only then enters the pool, which so never has more requests than
connections. The place is given back when the answer's body is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx2


class _ReleasingStream(httpx2.AsyncByteStream):
    """The answer's body; closing it (the client always does) gives the place back once."""

    def __init__(self, stream: httpx2.AsyncByteStream, release: Callable[[], None]) -> None:
        self.stream = stream
        self.release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            self.release()


class QueuedTransport(httpx2.AsyncBaseTransport):
    """`inner` with at most `max_in_flight` requests in it; the rest wait here, in order."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, max_in_flight: int) -> None:
        self.inner = inner
        self.places = asyncio.Semaphore(max_in_flight)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        pool_timeout = (request.extensions.get("timeout") or {}).get("pool")
        try:
            async with asyncio.timeout(pool_timeout):
                await self.places.acquire()
        except TimeoutError:
            raise httpx2.PoolTimeout("no place in the pool in time", request=request) from None
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.places.release()

        try:
            response = await self.inner.handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_ReleasingStream(response.stream, release),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()
