"""Peers: remote OpenAI-compatible servers reached directly.

A peer request bypasses the swap router (no queue, no concurrency limit, no swap): it is
forwarded to ``<proxy><path>`` with the peer's ``apiKey`` and relayed back through the same
streaming relay as local models. HTTPS peers are verified: the certificate chain against the
system's roots (or the peer's own ``caCert``) and the host name with ``service_identity``.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from twisted.web.server import Request
from zope.interface import implementer

from llamaswap.config import PeerConfig
from llamaswap.logs import get_logger
from llamaswap.web.errors import send_error
from llamaswap.web.fast import FastPath
from llamaswap.web.forward import Forwarder, UpstreamUnavailable
from llamaswap.web.relay import UpstreamBroke

log = get_logger()


@implementer(IPolicyForHTTPS)
class TrustOnlyCA:
    """TLS policy trusting one CA (a peer's ``caCert``); host names are still verified."""

    def __init__(self, ca_pem: bytes) -> None:
        self._ca = Certificate.loadPEM(ca_pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(hostname.decode("idna"), trustRoot=self._ca)


def tls_policy(peer: PeerConfig) -> Any:
    if peer.ca_cert:
        with open(peer.ca_cert, "rb") as f:
            return TrustOnlyCA(f.read())
    return BrowserLikePolicyForHTTPS(trustRoot=platformTrust())


def peer_headers(headers: Headers, peer: PeerConfig) -> Headers:
    """What a peer sees: no client credentials (unless the peer's own key), no X-Forwarded-*."""
    for name in (b"authorization", b"x-api-key", b"x-forwarded-for", b"x-forwarded-host",
                 b"x-forwarded-proto"):
        headers.removeHeader(name)
    if peer.api_key:
        headers.setRawHeaders(b"authorization", [f"Bearer {peer.api_key}".encode()])
        headers.setRawHeaders(b"x-api-key", [peer.api_key.encode()])
    return headers


class Peers(Service):
    """One HTTP client (own pool, TLS policy, timeouts) per peer; closed when stopped."""

    def __init__(self, peers: dict[str, PeerConfig] | Any, reactor: Any,
                 fast_path: FastPath | None = None) -> None:
        self._reactor = reactor
        self._fast_path = fast_path
        self._peers = dict(peers)
        self._in_flight: dict[Deferred[None], Deferred[Any]] = {}
        """Each request being forwarded: its end (fired once it is over) -> its forwarding."""
        self._closing = False
        self._cutting = False
        self._clients = {peer_id: self._client(peer) for peer_id, peer in self._peers.items()}

    def _client(self, peer: PeerConfig) -> Forwarder:
        return Forwarder(self._reactor, tls_policy=tls_policy(peer), timeouts=peer.timeouts,
                         fast_path=self._fast_path)

    def reconfigure(self, peers: dict[str, PeerConfig] | Any) -> None:
        """After a config reload: new clients for new or changed peers; idle connections
        of replaced ones are closed (requests in flight finish on them)."""
        old, self._peers = self._peers, dict(peers)
        for peer_id in set(old) | set(self._peers):
            if old.get(peer_id) == self._peers.get(peer_id):
                continue
            retired = self._clients.pop(peer_id, None)
            if retired is not None:
                retired.close()
            peer = self._peers.get(peer_id)
            if peer is not None:
                self._clients[peer_id] = self._client(peer)

    async def forward(self, request: Request, peer_id: str, upstream_uri: bytes,
                      body: bytes | IBodyProducer | None, headers: Headers) -> None:
        """Relay ``request`` to the peer; errors become 502/504 answers (503 once
        llamaswap is shutting down)."""
        if self._closing:
            send_error(request, 503, "llamaswap is shutting down", code="service_unavailable")
            return
        peer = self._peers[peer_id]
        url = peer.proxy.rstrip("/") + upstream_uri.decode("latin-1")
        forwarding = Deferred.fromCoroutine(self._clients[peer_id].forward(
            request, url, body, peer_headers(headers, peer)))
        timed_out = False

        def give_up() -> None:
            nonlocal timed_out
            if request.producer is None:  # the relay registers itself once headers are in
                timed_out = True
                forwarding.cancel()

        timer = (self._reactor.callLater(peer.response_header_timeout, give_up)
                 if peer.response_header_timeout > 0 else None)
        over: Deferred[None] = Deferred()
        self._in_flight[over] = forwarding
        try:
            await forwarding
        except CancelledError:
            if self._cutting and not request.startedWriting:
                send_error(request, 503, "llamaswap is shutting down: the peer request was "
                           "cut after the drain timeout", code="service_unavailable")
                return
            if not timed_out:
                raise
            send_error(request, 504, f"peer {peer_id} sent no response headers within "
                       f"{peer.response_header_timeout:g}s", code="peer_timeout")
        except UpstreamUnavailable as e:
            send_error(request, 502, f"peer proxy error: {e}", code="upstream_unavailable")
        except UpstreamBroke as e:
            log.warn("peer {peer}: response cut off: {why}", peer=peer_id, why=str(e))
        finally:
            if timer is not None and timer.active():
                timer.cancel()
            del self._in_flight[over]
            over.callback(None)

    async def drain(self, timeout: float) -> None:
        """Take no new request; wait up to ``timeout`` seconds for those being forwarded,
        then cut the rest (as llama-swap's peer shutdown does)."""
        self._closing = True
        if not self._in_flight:
            return
        settled: Deferred[None] = Deferred()

        def settle(_: object = None) -> None:
            if not settled.called:
                settled.callback(None)

        timer = self._reactor.callLater(timeout, settle)
        DeferredList(list(self._in_flight)).addCallback(settle)
        await settled
        if timer.active():
            timer.cancel()
        if self._in_flight:
            log.warn("shutdown: {n} peer requests still in flight after {t:g}s; cutting them",
                     n=len(self._in_flight), t=timeout)
            self._cutting = True
            for forwarding in list(self._in_flight.values()):
                forwarding.cancel()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        for client in self._clients.values():
            await client.close()
