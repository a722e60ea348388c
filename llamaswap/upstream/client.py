"""Requests to model servers and peers by URL, over a ``ConnectionPool``.

A pooled connection can be closed by the server while it sits idle (an idle timeout, a
restart); a request written to it then meets the close before any byte of an answer. Such a
request is sent once more on a new connection when doing so cannot repeat an effect
(``may_retry_stale``), as Twisted's ``HTTPConnectionPool`` does. Anything else that got no
answer is raised as ``NoAnswer`` for the caller to decide (``web/unanswered.py``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer

from llamaswap.upstream.connect import ModelEndpointFactory
from llamaswap.upstream.connection import UpstreamConnection, UpstreamResponse
from llamaswap.upstream.errors import NoAnswer, UpstreamError
from llamaswap.upstream.pool import ConnectionPool
from llamaswap.web.unanswered import unanswered

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
"""RFC 9110 §9.2.2: methods whose repetition has the effect of one request."""


def may_retry_stale(method: bytes, body: object, error: NoAnswer) -> bool:
    """Whether a request that met ``error`` may be sent again on a new connection: only
    when the connection was a reused one, the method idempotent and the body still at hand
    (none, or bytes; a producer was consumed by the first attempt)."""
    return error.reused and method in IDEMPOTENT and (body is None or isinstance(body, bytes))


class UpstreamClient:
    """One HTTP/1.1 client: endpoints from ``endpoints`` (default: ``ModelEndpointFactory``
    with ``tls_policy`` and ``connect_timeout``), connections kept in ``pool``."""

    MEMO_SIZE = 1024

    def __init__(self, reactor: Any, endpoints: IAgentEndpointFactory | None = None,
                 max_idle_per_origin: int = 256, tls_policy: Any = None,
                 connect_timeout: float | None = None) -> None:
        self.pool = ConnectionPool(reactor, max_idle_per_origin)
        self._endpoints = endpoints if endpoints is not None else ModelEndpointFactory(
            reactor, tls_policy, connect_timeout)
        self._targets: dict[str, tuple[Any, IStreamClientEndpoint, bytes, bytes]] = {}

    def _target(self, url: str) -> tuple[Any, IStreamClientEndpoint, bytes, bytes]:
        """Origin key, endpoint, Host header and request target, remembered per URL."""
        known = self._targets.get(url)
        if known is None:
            raw = url.encode("latin-1")
            if any(c in raw for c in b" \r\n\t"):
                raise UpstreamError(f"invalid URL {url!r}")
            uri = URI.fromBytes(raw)
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
        """Send one request; return its response head (cancellable until then)."""
        key, endpoint, host, target = self._target(url)
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
