"""Counts the TCP connections a stub upstream accepts, exactly, at uvicorn's protocol level.

An ASGI app sees requests, not connections: a client built per request and a
pooled one look the same to it. uvicorn takes the HTTP protocol class as a
public setting (`uvicorn.Config(http=...)`), so the stub runs a subclass of
uvicorn's own that notes each accepted connection and its end. A connection
counts for the gauge when the first ordinary (non-control) request arrives on
it, so the harness's own control connection never counts.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.utils import get_remote_addr

Peer = tuple[str, int]


class ConnectionTable:
    """The connections open now (by peer address) and whether an item request used each yet."""

    def __init__(self) -> None:
        self.open: dict[Peer, bool] = {}
        #: Every connection accepted since the process started.
        self.accepted = 0

    def opened(self, peer: Peer | None) -> None:
        self.accepted += 1
        if peer is not None:
            self.open[peer] = False

    def closed(self, peer: Peer | None) -> None:
        if peer is not None:
            self.open.pop(peer, None)

    def first_use(self, peer: Peer | None) -> bool:
        """True the first time an item request arrives on the connection from `peer`.

        False for a connection the protocol never reported (an in-process ASGI
        transport in unit tests has no TCP connection to count)."""
        if peer is None or self.open.get(peer, True):
            return False
        self.open[peer] = True
        return True


#: The stub process's table: one per process, like the uvicorn server it counts for.
CONNECTIONS = ConnectionTable()


class CountingHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools when installed), reporting to `CONNECTIONS`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.fanout_peer = get_remote_addr(transport)
        CONNECTIONS.opened(self.fanout_peer)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        CONNECTIONS.closed(getattr(self, "fanout_peer", None))
        super().connection_lost(exc)
