"""Client endpoints for model servers: fail fast when refused, skip needless name lookups.

A default ``HostnameEndpoint`` reports a refused connection only when its next happy-eyeballs
attempt would have started, 0.3 s later. A model that is still starting
refuses every health probe, so each probe took 300 ms and a cold request waited for
nothing (measured by ``bench/run.py``: 150 ms of a 320 ms cold start). Here names get a
2 ms attempt delay, and IP literals (``http://127.0.0.1:${PORT}``) connect directly,
without a thread-pool round trip to resolve them on every new connection.
"""

from __future__ import annotations

import socket
from ipaddress import IPv6Address, ip_address
from typing import Any

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

Origin = tuple[bytes, bytes, int]
"""``(scheme, host, port)``: what per-server settings and pooled connections are keyed by."""

ATTEMPT_DELAY = 0.002
CONNECT_TIMEOUT = 30.0
NO_CONNECT_LIMIT = 24 * 3600.0
"""A connect timeout of 0 means none; the system gives up long before this."""


@implementer(IAgentEndpointFactory)
class ModelEndpointFactory:
    """TCP (TLS for https: ``wrapClientTLS`` with ``tls_policy``'s client options) to a model
    server or peer, as ``Agent``'s default endpoints but quick to fail."""

    def __init__(self, reactor: Any, tls_policy: Any = None,
                 connect_timeout: float | None = None) -> None:
        self._reactor = reactor
        self._timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        self._tls_policy = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()
        self._endpoints: dict[Origin, IStreamClientEndpoint] = {}
        self._connect_timeouts: dict[Origin, float] = {}

    def set_connect_timeouts(self, by_origin: dict[Origin, float]) -> None:
        """Per origin ``(scheme, host, port)``: seconds to connect (a model's
        ``timeouts.connect``; 0: as long as the system tries). Others keep the default."""
        changed = set(by_origin.items()) ^ set(self._connect_timeouts.items())
        self._connect_timeouts = dict(by_origin)
        for key, _ in changed:
            self._endpoints.pop(key, None)

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        # Endpoints are stateless: one per origin is built once.
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._build(uri)
        return endpoint

    def _build(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        endpoint: IStreamClientEndpoint
        timeout = self._connect_timeouts.get((uri.scheme, uri.host, uri.port), self._timeout)
        timeout = timeout if timeout > 0 else NO_CONNECT_LIMIT
        try:
            address = ip_address(host.strip("[]"))
        except ValueError:
            endpoint = HostnameEndpoint(self._reactor, host, uri.port, timeout=timeout,
                                        attemptDelay=ATTEMPT_DELAY)
        else:
            kind = TCP6ClientEndpoint if isinstance(address, IPv6Address) else TCP4ClientEndpoint
            endpoint = kind(self._reactor, str(address), uri.port, timeout=timeout)
        if uri.scheme == b"http":
            return endpoint
        if uri.scheme == b"https":
            return wrapClientTLS(self._tls_policy.creatorForNetloc(uri.host, uri.port), endpoint)
        raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")


def enable_keepalive(transport: Any, idle: float) -> None:
    """TCP keep-alive probes after ``idle`` seconds of silence, then every ``idle`` seconds
    (a model's or peer's ``timeouts.keepalive``), where the platform lets both be set. A
    transport without a socket handle (``ISystemHandle``) is left as it is."""
    try:
        sock = transport.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        seconds = max(1, int(idle))
        for option in ("TCP_KEEPIDLE", "TCP_KEEPINTVL"):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), seconds)
    except (AttributeError, OSError):
        pass
