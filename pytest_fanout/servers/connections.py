"""Counts the TCP connections a stub upstream accepts, exactly, where they are accepted.

A request handler sees requests, not connections: a client built per request and
a pooled one look the same to it. The stub's own HTTP server
(`stubhttp.StubProtocol`) notes each accepted connection and its end in this
table. A connection counts for the gauge when the first ordinary (non-control)
request arrives on it, so the harness's own control connection never counts.
"""

from __future__ import annotations

from collections.abc import Callable

Peer = tuple[str, int]


class ConnectionTable:
    """The connections open now (by peer address), when an item request first used each,
    and how many of those first used since the last reset have closed since: a client
    built per request closes every connection it opened before the request ends."""

    def __init__(self) -> None:
        #: peer -> the epoch of its first item request (0: none yet).
        self.open: dict[Peer, int] = {}
        #: Every connection accepted since the process started.
        self.accepted = 0
        #: Bumped by each gauge reset.
        self.epoch = 1
        #: Connections first used in this epoch that have closed since.
        self.closed_in_epoch = 0
        #: peer -> what to do if it closes while a call on it is unanswered (`watch`).
        self.watchers: dict[Peer, Callable[[], None]] = {}

    def opened(self, peer: Peer | None) -> None:
        self.accepted += 1
        if peer is not None:
            self.open[peer] = 0

    def closed(self, peer: Peer | None) -> None:
        if peer is None:
            return
        if self.open.pop(peer, None) == self.epoch:
            self.closed_in_epoch += 1
        watcher = self.watchers.pop(peer, None)
        if watcher is not None:
            watcher()

    def watch(self, peer: Peer | None, on_close: Callable[[], None]) -> None:
        """Call `on_close` if the connection from `peer` closes before `unwatch`: the
        client went away (the app cancelled the call) before its answer. One call at a time
        on an HTTP/1.1 connection, so one watcher per peer."""
        if peer is not None:
            self.watchers[peer] = on_close

    def unwatch(self, peer: Peer | None) -> None:
        if peer is not None:
            self.watchers.pop(peer, None)

    def first_use(self, peer: Peer | None) -> bool:
        """True the first time an item request arrives on the connection from `peer`.

        False for a connection the protocol never reported (an in-process ASGI
        transport in unit tests has no TCP connection to count)."""
        if peer is None or self.open.get(peer) != 0:
            return False
        self.open[peer] = self.epoch
        return True

    def live(self) -> int:
        """Connections open now that an item call used (in any epoch): a client built per
        call and never closed makes this grow sample after sample; a shared pool keeps it
        constant."""
        return sum(1 for epoch in self.open.values() if epoch)

    def new_epoch(self) -> None:
        """A gauge reset: connections first used from now on are counted apart."""
        self.epoch += 1
        self.closed_in_epoch = 0


#: The stub process's table: one per process, like the server it counts for.
CONNECTIONS = ConnectionTable()
