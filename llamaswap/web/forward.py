"""Sends one client request to an upstream and relays the answer back, streaming.

Through ``llamaswap.upstream.UpstreamClient``, llamaswap's one HTTP/1.1 client with a
persistent pool; bodies are never buffered on the way back (``Relay``). Not treq: what treq
adds is wrong for a proxy (following redirects, a cookie jar shared by all clients, gzip
decoding) and cost ~15% of a proxied request's CPU time; nor Twisted's ``Agent``, which cost
about a third of it (``bench/run.py``, ``docs/performance.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.server import Request

from llamaswap.config.model import Timeouts
from llamaswap.context import context_of
from llamaswap.upstream import UpstreamClient, read_body
from llamaswap.upstream.pool import IDLE_TIMEOUT
from llamaswap.web.fast import FastPath
from llamaswap.web.relay import Relay
from llamaswap.web.unanswered import Unanswered, unanswered

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length"}


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or answered nothing (before any byte was sent).

    ``unanswered`` is set when no byte of a response came back at all (refused, or closed
    first): such a request may be sent again (``web/unanswered.py``).
    """

    def __init__(self, message: str, unanswered: Unanswered | None = None) -> None:
        super().__init__(message)
        self.unanswered = unanswered


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in headers.getRawHeaders(b"connection", []):
        tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def _copy(source: Headers, target: Headers, skip: frozenset[bytes] | set[bytes]) -> None:
    """``source``'s headers but ``skip`` into ``target``, replacing what it has of them.

    Through the public ``setRawHeaders``: copying into ``Headers``' private dict saved about
    1.7 µs for 8 headers (under 1% of a small proxied request's CPU), not worth a private
    name outside ``web/fast``.
    """
    for name, values in source.getAllRawHeaders():
        if name.lower() not in skip:
            target.setRawHeaders(name, values)


def upstream_headers(request: Request) -> Headers:
    """The client's headers minus hop-by-hop ones, plus the X-Forwarded-* trio."""
    out = Headers()
    _copy(request.requestHeaders, out, NOT_FORWARDED | _connection_tokens(request.requestHeaders))
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
    _copy(response.headers, request.responseHeaders, skip)
    content_type = response.headers.getRawHeaders(b"content-type", [b""])[0]
    if content_type.lower().startswith(b"text/event-stream"):
        request.responseHeaders.setRawHeaders(b"x-accel-buffering", [b"no"])
    if response.length is UNKNOWN_LENGTH:
        request.responseHeaders.removeHeader(b"content-length")


class Forwarder:
    """The data-path HTTP client to local model servers."""

    # Idle upstream connections kept per model server. Fewer than the streams in flight means
    # reconnecting (and resolving the name) under load: at 200 streams, 64 cost ~7% of CPU.
    def __init__(self, reactor: Any, max_per_host: int = 256, tls_policy: Any = None,
                 connect_timeout: float | None = None, timeouts: Timeouts | None = None,
                 fast_path: FastPath | None = None) -> None:
        """``timeouts``: for every origin (a peer's ``timeouts``); ``connect_timeout``
        overrides its ``connect``. Model servers get theirs from ``set_model_timeouts``.
        ``fast_path``: whether upstream sockets batch their writes per reactor turn (by
        default as ``LLAMASWAP_FAST_PATH`` says, ``llamaswap.web.fast``)."""
        if timeouts is not None and connect_timeout is None:
            connect_timeout = timeouts.connect
        fast = FastPath.configure() if fast_path is None else fast_path
        self._client = UpstreamClient(
            reactor, max_idle_per_origin=max_per_host, tls_policy=tls_policy,
            connect_timeout=connect_timeout,
            idle_timeout=IDLE_TIMEOUT if timeouts is None else timeouts.idle_conn,
            keepalive=0.0 if timeouts is None else timeouts.keepalive,
            prepare=fast.write_through if "writes" in fast.pieces else None)
        self.pool = self._client.pool
        self.watch: Callable[[Request, str], Any] | None = None
        """Called as a request is sent upstream; may return an object whose ``response(code,
        headers)`` and ``chunk(data)`` see the answer pass (``exchange.Exchange``)."""

    async def forward(self, request: Request, url: str, body: bytes | IBodyProducer | None,
                      headers: Headers | None = None,
                      activity: Callable[[], None] | None = None) -> int:
        """Relay ``request`` to ``url``; return the body bytes relayed.

        ``body`` is the request body (bytes, or a producer for large ones); ``headers``
        replaces ``upstream_headers(request)`` when the caller adjusted them; ``activity``
        is called whenever the upstream sends something (hang detection).

        Raises ``UpstreamUnavailable`` if nothing came back (nothing was written to the
        client yet) and ``relay.UpstreamBroke`` if the body broke off (client aborted).
        """
        if headers is None:
            headers = upstream_headers(request)
        # One watch per client request, also when it is sent again (web/unanswered.py).
        context = context_of(request)
        watch = context.watch
        if watch is None and self.watch is not None:
            watch = context.watch = self.watch(request, url)
        try:
            response = await self._client.request(request.method, url, headers, body)
        except CancelledError:
            raise
        except Exception as e:
            raise UpstreamUnavailable(_describe(e), unanswered(e)) from e
        if context.stream_started:
            if response.code >= 400:  # a waiting stream already said 200: report it inside
                return await _error_as_event(request, response)
        else:
            request.setResponseCode(response.code, response.phrase)
            copy_response_headers(response, request)
        if watch is not None:
            watch.response(response.code, response.headers)
        if activity is not None:
            activity()
        relay = Relay(request, on_chunk=_chunk_observer(
            watch.chunk if watch is not None else None, activity))
        response.deliverBody(relay)
        return await relay.done

    def endpoint_for(self, url: str) -> IStreamClientEndpoint:
        """The client endpoint (with this forwarder's TLS policy and connect timeout) for
        ``url``'s server: for a connection of its own, outside the pool (websockets)."""
        return self._client.endpoint_for(url)

    def set_model_timeouts(self, by_url: Mapping[str, Timeouts]) -> None:
        """Each model's ``timeouts``, by its proxy URL (a config load or reload). Two models
        behind one origin share its settings: the last one given wins. A response head
        later than ``responseHeader`` fails the request with ``UpstreamUnavailable``."""
        self._client.set_origin_timeouts(by_url)

    def close(self) -> Deferred[None]:
        return self.pool.close()


def _chunk_observer(watch: Callable[[bytes], None] | None,
                    activity: Callable[[], None] | None) -> Callable[[bytes], None] | None:
    if activity is None:
        return watch
    if watch is None:
        return lambda _: activity()

    def both(data: bytes) -> None:
        watch(data)
        activity()

    return both


async def _error_as_event(request: Request, response: Any) -> int:
    """An upstream error after a keep-alive stream began: one SSE ``error`` event, then end."""
    body = await read_body(response)  # an error answer: small, and read to its end
    text = body.decode("utf-8", "replace").strip().replace("\n", " ") or json.dumps(
        {"error": {"message": f"upstream answered {response.code}", "code": response.code}})
    event = f"event: error\ndata: {text}\n\n".encode()
    if not context_of(request).gone:
        request.write(event)
        request.finish()
    return len(event)


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(error) or error.__class__.__name__
