"""Requests to model servers and peers by URL, over a ``ConnectionPool``.

A pooled connection can be closed by the server while it sits idle (an idle timeout, a
restart); a request written to it then meets the close before any byte of an answer. Such a
request is sent once more on a new connection when doing so cannot repeat an effect
(``may_retry_stale``), as Twisted's ``HTTPConnectionPool`` does. Anything else that got no
answer is raised as ``NoAnswer`` for the caller to decide (``web/unanswered.py``).

Settings per origin (a model's or peer's ``timeouts``, ``docs/timeouts.md``) come from
``set_origin_timeouts``: how long to connect, to wait for a response head, to keep an idle
connection, and when TCP keep-alive probes start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer

from llamaswap.config.model import Timeouts
from llamaswap.upstream.connect import ModelEndpointFactory, Origin
from llamaswap.upstream.connection import UpstreamConnection, UpstreamResponse
from llamaswap.upstream.errors import NoAnswer, ResponseHeaderTimeout, UpstreamError, unanswered
from llamaswap.upstream.pool import IDLE_TIMEOUT, ConnectionPool

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
"""RFC 9110 §9.2.2: methods whose repetition has the effect of one request."""


def may_retry_stale(method: bytes, body: object, error: NoAnswer) -> bool:
    """Whether a request that met ``error`` may be sent again on a new connection: only
    when the connection was a reused one, the method idempotent and the body still at hand
    (none, or bytes; a producer was consumed by the first attempt)."""
    return error.reused and method in IDEMPOTENT and (body is None or isinstance(body, bytes))


def _uri(url: str) -> URI:
    raw = url.encode("latin-1")
    if any(c in raw for c in b" \r\n\t"):
        raise UpstreamError(f"invalid URL {url!r}")
    uri: URI = URI.fromBytes(raw)
    return uri


class UpstreamClient:
    """One HTTP/1.1 client: endpoints from ``endpoints`` (default: ``ModelEndpointFactory``
    with ``tls_policy`` and ``connect_timeout``), connections kept in ``pool`` (idle for
    ``idle_timeout`` seconds, TCP keep-alive after ``keepalive``; each new connection's
    transport handed to ``prepare``). These are the defaults; ``set_origin_timeouts`` sets
    them per origin."""

    MEMO_SIZE = 1024

    def __init__(self, reactor: Any, endpoints: IAgentEndpointFactory | None = None,
                 max_idle_per_origin: int = 256, tls_policy: Any = None,
                 connect_timeout: float | None = None, idle_timeout: float = IDLE_TIMEOUT,
                 keepalive: float = 0.0,
                 prepare: Callable[[Any], object] | None = None) -> None:
        self._reactor = reactor
        self.pool = ConnectionPool(reactor, max_idle_per_origin, idle_timeout, keepalive,
                                   prepare)
        self._endpoints = endpoints if endpoints is not None else ModelEndpointFactory(
            reactor, tls_policy, connect_timeout)
        self._targets: dict[str, tuple[Origin, IStreamClientEndpoint, bytes, bytes]] = {}
        self._response_header: dict[Origin, float] = {}

    @staticmethod
    def origin_of(url: str) -> Origin:
        """The origin ``url`` is on: the key of its settings and pooled connections."""
        uri = _uri(url)
        return (uri.scheme, uri.host, uri.port)

    def set_origin_timeouts(self, by_url: Mapping[str, Timeouts]) -> None:
        """Each server's ``timeouts``, by a URL on it (a config load or reload), replacing
        what was set before; origins not given keep the client's defaults. New values apply
        to new requests and connections at once. Two URLs on one origin: the last wins."""
        by_origin = {self.origin_of(url): timeouts for url, timeouts in by_url.items()}
        set_connect = getattr(self._endpoints, "set_connect_timeouts", None)
        if set_connect is not None:
            set_connect({origin: t.connect for origin, t in by_origin.items()})
        self.pool.idle_timeouts = {origin: t.idle_conn for origin, t in by_origin.items()}
        self.pool.keepalives = {origin: t.keepalive for origin, t in by_origin.items()}
        self._response_header = {origin: t.response_header for origin, t in by_origin.items()
                                 if t.response_header > 0}
        self._targets.clear()  # the endpoints remembered there have the old connect timeout

    def endpoint_for(self, url: str) -> IStreamClientEndpoint:
        """The endpoint (TLS policy and connect timeout included) for ``url``'s server: for a
        connection of the caller's own, outside the pool (a websocket tunnel)."""
        return self._target(url)[1]

    def _target(self, url: str) -> tuple[Origin, IStreamClientEndpoint, bytes, bytes]:
        """Origin key, endpoint, Host header and request target, remembered per URL."""
        known = self._targets.get(url)
        if known is None:
            uri = _uri(url)
            endpoint = self._endpoints.endpointForURI(uri)
            default_port = 443 if uri.scheme == b"https" else 80
            host = uri.host if b":" not in uri.host else b"[" + uri.host.strip(b"[]") + b"]"
            if uri.port != default_port:
                host += b":%d" % uri.port
            if len(self._targets) >= self.MEMO_SIZE:
                self._targets.clear()
            known = self._targets[url] = ((uri.scheme, uri.host, uri.port), endpoint, host,
                                          uri.originForm)
        return known

    async def _connection(self, key: Any, endpoint: IStreamClientEndpoint,
                          fresh: bool) -> UpstreamConnection:
        try:
            return await self.pool.connection(key, endpoint, fresh)
        except Exception as e:
            if unanswered(e) is None:
                raise
            raise NoAnswer(f"connection refused: {e}", sent=False) from e

    async def request(self, method: bytes, url: str, headers: Headers,
                      body: bytes | IBodyProducer | None) -> UpstreamResponse:
        """Send one request; return its response head (cancellable until then).

        Past the origin's ``responseHeader`` limit, if it has one, the attempt is cancelled
        (its connection closed) and ``ResponseHeaderTimeout`` raised."""
        key, endpoint, host, target = self._target(url)
        limit = self._response_header.get(key, 0.0) if self._response_header else 0.0
        if limit <= 0:
            return await self._exchange(method, key, endpoint, host, target, headers, body)
        attempt = Deferred.fromCoroutine(
            self._exchange(method, key, endpoint, host, target, headers, body))
        try:
            return await attempt.addTimeout(limit, self._reactor)
        except defer.TimeoutError:
            raise ResponseHeaderTimeout(f"no response headers within {limit:g}s "
                                        "(timeouts.responseHeader)") from None

    async def _exchange(self, method: bytes, key: Origin, endpoint: IStreamClientEndpoint,
                        host: bytes, target: bytes, headers: Headers,
                        body: bytes | IBodyProducer | None) -> UpstreamResponse:
        connection = await self._connection(key, endpoint, fresh=False)
        try:
            return await connection.send(method, target, host, headers, body)
        except NoAnswer as e:
            if not may_retry_stale(method, body, e):
                raise
        connection = await self._connection(key, endpoint, fresh=True)
        return await connection.send(method, target, host, headers, body)

    def close(self) -> Any:
        """Close idle connections; fires once every connection is gone."""
        return self.pool.close()
