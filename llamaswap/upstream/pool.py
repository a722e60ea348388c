"""Idle connections per origin, reused most recently used first, closed when idle too long.

How long an idle connection is kept and whether its socket sends TCP keep-alive probes are
set per origin (a model's or peer's ``timeouts.idleConn`` and ``timeouts.keepalive``) or for
the whole pool; each new connection's transport is also handed to ``prepare``, if given
(the fast path's write batching, ``llamaswap.web.fast``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory

from llamaswap.upstream.connect import enable_keepalive
from llamaswap.upstream.connection import UpstreamConnection

IDLE_TIMEOUT = 240.0
"""Seconds an idle connection is kept (Twisted's ``HTTPConnectionPool``: the same)."""


class _ConnectionFactory(Factory):
    noisy = False  # Factory logs "Starting factory ..." per connection otherwise

    def __init__(self, build: Callable[[], UpstreamConnection]) -> None:
        self._build = build

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        return self._build()


class ConnectionPool:
    """Keeps up to ``max_idle_per_origin`` idle connections per origin (0: none, every
    connection is closed after its response), each for ``idle_timeout`` seconds (0: until the
    server closes it); ``keepalive``: idle seconds before TCP keep-alive probes (0: none)."""

    def __init__(self, reactor: Any, max_idle_per_origin: int = 256,
                 idle_timeout: float = IDLE_TIMEOUT, keepalive: float = 0.0,
                 prepare: Callable[[Any], object] | None = None) -> None:
        self._reactor = reactor
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_timeout = idle_timeout
        self.keepalive = keepalive
        self.idle_timeouts: dict[Any, float] = {}
        """Per origin key: ``idle_timeout`` for its connections, where it differs."""
        self.keepalives: dict[Any, float] = {}
        """Per origin key: ``keepalive`` for its new connections, where it differs."""
        self._prepare = prepare
        self._idle: dict[Any, list[UpstreamConnection]] = {}
        self._open: set[UpstreamConnection] = set()
        self._closed_waiters: list[Deferred[None]] = []

    def connection(self, key: Any, endpoint: IStreamClientEndpoint,
                   fresh: bool = False) -> Deferred[UpstreamConnection]:
        """An idle connection to ``key`` (``reused`` set), or a new one; ``fresh``: new."""
        idle = None if fresh else self._idle.get(key)
        while idle:
            connection = idle.pop()
            self._forget_timer(connection)
            if connection.state == "idle":
                connection.reused = True
                return succeed(connection)

        def build() -> UpstreamConnection:
            connection = UpstreamConnection(self._idle_again, self._lost, self._made)
            connection.key = key
            self._open.add(connection)
            return connection

        d: Deferred[Any] = endpoint.connect(_ConnectionFactory(build))
        return d

    def _idle_again(self, connection: UpstreamConnection) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.max_idle_per_origin:
            oldest = idle.pop(0) if idle else connection
            self._close(oldest)
            if oldest is connection:
                return
        idle.append(connection)
        timeout = self.idle_timeouts.get(connection.key, self.idle_timeout)
        if timeout > 0:
            connection.idle_timer = self._reactor.callLater(timeout, self._expire, connection)

    def _made(self, connection: UpstreamConnection) -> None:
        """A new connection is up: its socket options, then ``prepare``."""
        keepalive = self.keepalives.get(connection.key, self.keepalive)
        if keepalive > 0:
            enable_keepalive(connection.transport, keepalive)
        if self._prepare is not None:
            self._prepare(connection.transport)

    def _close(self, connection: UpstreamConnection) -> None:
        self._forget_timer(connection)
        connection.state = "closed"
        connection.transport.loseConnection()

    def _expire(self, connection: UpstreamConnection) -> None:
        connection.idle_timer = None
        if connection.state == "idle":
            connection.state = "closed"
            connection.transport.loseConnection()

    def _forget_timer(self, connection: UpstreamConnection) -> None:
        if connection.idle_timer is not None and connection.idle_timer.active():
            connection.idle_timer.cancel()
        connection.idle_timer = None

    def _lost(self, connection: UpstreamConnection) -> None:
        self._forget_timer(connection)
        self._open.discard(connection)
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
        if not self._open:
            waiters, self._closed_waiters = self._closed_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def close(self) -> Deferred[None]:
        """Close the idle connections; fires once they, and every busy one, are gone."""
        for idle in list(self._idle.values()):
            for connection in list(idle):
                self._close(connection)
        if not self._open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed_waiters.append(d)
        return d
