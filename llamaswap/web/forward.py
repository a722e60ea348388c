"""Sends one client request to an upstream and relays the answer back, streaming.

treq's ``HTTPClient`` over our own persistent ``HTTPConnectionPool``; bodies are never
buffered on the way back (``unbuffered=True`` plus ``Relay``). Two treq defaults are wrong for
a proxy and are turned off: following redirects, and a shared cookie jar (which would hand
one client's upstream cookies to the next client).
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.server import Request
from zope.interface import implementer

from llamaswap.web.pool import QuietPool
from llamaswap.web.relay import Relay

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length"}


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or answered nothing (before any byte was sent)."""


class _NoCookies(IndexableCookieJar):
    """A jar that never stores or adds a cookie: Set-Cookie and Cookie pass through as is."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def add_cookie_header(self, request: Any) -> None:
        pass


@implementer(IBodyProducer)
class BytesProducer:
    """Writes an in-memory body at once (treq's default goes through a cooperator tick)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in headers.getRawHeaders(b"connection", []):
        tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def upstream_headers(request: Request) -> Headers:
    """The client's headers minus hop-by-hop ones, plus the X-Forwarded-* trio."""
    out = Headers()
    skip = NOT_FORWARDED | _connection_tokens(request.requestHeaders)
    for name, values in request.requestHeaders.getAllRawHeaders():
        if name.lower() not in skip:
            out.setRawHeaders(name, values)
    client = request.getClientAddress()
    host = getattr(client, "host", None)
    if host:
        prior = request.getHeader(b"x-forwarded-for")
        out.setRawHeaders(b"x-forwarded-for",
                          [(prior.decode("latin-1") + ", " if prior else "") + host])
    out.setRawHeaders(b"x-forwarded-proto", [b"https" if request.isSecure() else b"http"])
    original_host = request.getHeader(b"host")
    if original_host:
        out.setRawHeaders(b"x-forwarded-host", [original_host])
    return out


def copy_response_headers(response: Any, request: Request) -> None:
    skip = HOP_BY_HOP | _connection_tokens(response.headers)
    for name, values in response.headers.getAllRawHeaders():
        if name.lower() not in skip:
            request.responseHeaders.setRawHeaders(name, values)
    content_type = response.headers.getRawHeaders(b"content-type", [b""])[0]
    if content_type.lower().startswith(b"text/event-stream"):
        request.responseHeaders.setRawHeaders(b"x-accel-buffering", [b"no"])
    if response.length is UNKNOWN_LENGTH:
        request.responseHeaders.removeHeader(b"content-length")


class Forwarder:
    """The data-path HTTP client to local model servers."""

    def __init__(self, reactor: Any, max_per_host: int = 64) -> None:
        self.pool = QuietPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = max_per_host
        self._client = HTTPClient(Agent(reactor, pool=self.pool), cookiejar=_NoCookies())

    async def forward(self, request: Request, url: str, body: bytes | None) -> int:
        """Relay ``request`` to ``url``; return the body bytes relayed.

        Raises ``UpstreamUnavailable`` if nothing came back (nothing was written to the
        client yet) and ``relay.UpstreamBroke`` if the body broke off (client aborted).
        """
        method = request.method.decode("ascii")
        producer = BytesProducer(body) if body is not None else None
        try:
            response = await self._client.request(
                method, url, headers=upstream_headers(request), data=producer,
                unbuffered=True, allow_redirects=False)
        except CancelledError:
            raise
        except Exception as e:
            raise UpstreamUnavailable(_describe(e)) from e
        request.setResponseCode(response.code, response.phrase)
        copy_response_headers(response, request)
        relay = Relay(request)
        response.deliverBody(relay)
        return await relay.done

    def close(self) -> Deferred[None]:
        return self.pool.closeCachedConnections()


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(error) or error.__class__.__name__
