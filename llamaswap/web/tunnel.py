"""Websocket upgrades relayed to a model server: the handshake, then bytes both ways.

The upgrade request goes to the model server on a connection of its own (never a pooled
one). If the server answers ``101 Switching Protocols``, its answer goes to the client as
sent and the two connections are spliced (``Splice``): each transport is registered as the
producer of the other, so a slow reader on one side pauses reading on the other instead of
letting buffers grow. The client's HTTP channel stops parsing once it is told to tunnel
(``TunnelChannel``). Any other answer becomes a 502 naming it (``docs/upstream.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from llamaswap.logs import get_logger
from llamaswap.web.errors import send_error

__all__ = ["MAX_HEAD", "Splice", "TunnelChannel", "relay_websocket"]

log = get_logger()

MAX_HEAD = 64 * 1024
"""Largest handshake answer read from a model server."""


class TunnelChannel(TypingProtocol):
    """What the client's HTTP channel offers: stop parsing HTTP and hand every byte
    received from now on to ``receive``; ``lost`` is told when the connection ends."""

    def start_tunnel(self, receive: Callable[[bytes], None],
                     lost: Callable[[Failure], None]) -> None: ...


class Splice:
    """Two transports joined: what one side receives is written to the other.

    Each transport is the other's streaming producer, so TCP backpressure passes through:
    when the client reads slowly, the client transport's buffer fills, it pauses the
    upstream transport, and the model server's writes back up into its own socket.
    ``done`` fires once both are closed; closing one side closes the other.
    """

    def __init__(self, client: Any, upstream: Any,
                 activity: Callable[[], None] | None = None) -> None:
        self.client = client
        self.upstream = upstream
        self._activity = activity
        self.done: Deferred[None] = Deferred()
        self._closed = 0
        client.unregisterProducer()  # the HTTP channel's own registration
        client.registerProducer(upstream, True)
        upstream.registerProducer(client, True)
        client.resumeProducing()  # the channel paused reading while it handled the request

    def from_client(self, data: bytes) -> None:
        self.upstream.write(data)

    def from_upstream(self, data: bytes) -> None:
        self.client.write(data)
        if self._activity is not None:
            self._activity()  # the model is alive (hang detection)

    def client_lost(self, reason: Failure) -> None:
        self._side_closed(self.upstream)

    def upstream_lost(self, reason: Failure) -> None:
        self._side_closed(self.client)

    def _side_closed(self, other: Any) -> None:
        self._closed += 1
        if self._closed == 1:
            other.unregisterProducer()
            other.loseConnection()
        elif not self.done.called:
            self.done.callback(None)


class _Handshake(Protocol):
    """The model server's side: sends the upgrade request, reads the answer's head, then
    passes bytes to the splice."""

    def __init__(self, head: bytes) -> None:
        self._request_head = head
        self._buffer = b""
        self.answer: Deferred[tuple[int, bytes]] = Deferred()
        self.splice: Splice | None = None

    def connectionMade(self) -> None:
        self.transport.write(self._request_head)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.splice is not None:
            self.splice.from_upstream(data)
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                self.transport.loseConnection()  # type: ignore[union-attr]
            return
        head = self._buffer[:end + 4]
        self._buffer = self._buffer[end + 4:]
        status = head.split(b"\r\n", 1)[0].split(b" ", 2)
        try:
            code = int(status[1])
        except (IndexError, ValueError):
            code = 0
        self.answer.callback((code, head))

    def begin(self, splice: Splice) -> None:
        """Splice from now on; bytes that came with the head go first."""
        self.splice = splice
        rest, self._buffer = self._buffer, b""
        if rest:
            splice.from_upstream(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.splice is not None:
            self.splice.upstream_lost(reason)
        elif not self.answer.called:
            self.answer.errback(reason)


def _request_head(request: Request, uri: URI, target: bytes, headers: Headers) -> bytes:
    """The upgrade request for the model server: the client's end-to-end headers, the
    upgrade itself restated (``Connection`` and ``Upgrade`` are hop-by-hop)."""
    host = uri.host if b":" not in uri.host else b"[" + uri.host.strip(b"[]") + b"]"
    if uri.port != (443 if uri.scheme == b"https" else 80):
        host += b":%d" % uri.port
    upgrade = b", ".join(request.requestHeaders.getRawHeaders(b"upgrade", [b"websocket"]))
    lines = [request.method, b" ", target, b" HTTP/1.1\r\n", b"Host: ", host, b"\r\n",
             b"Connection: Upgrade\r\n", b"Upgrade: ", upgrade, b"\r\n"]
    for name, values in headers.getAllRawHeaders():
        if name.lower() in (b"host", b"connection", b"upgrade", b"content-length",
                            b"transfer-encoding"):
            continue
        for value in values:
            lines += [name, b": ", value, b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


async def relay_websocket(request: Request, url: str, headers: Headers,
                          endpoint: IStreamClientEndpoint,
                          activity: Callable[[], None] | None = None) -> None:
    """Relay the websocket upgrade ``request`` to ``url``; return when the tunnel closes.

    The request ends with the status the model server gave: 101 (logged when the tunnel
    closes), or a 502 naming the refusal or the failure.
    """
    channel = request.channel
    if not hasattr(channel, "start_tunnel"):
        send_error(request, 501, "websocket relay needs llamaswap's own HTTP site",
                   code="websocket_unsupported")
        return
    uri = URI.fromBytes(url.encode("latin-1"))
    handshake = _Handshake(_request_head(request, uri, uri.originForm, headers))
    factory = Factory.forProtocol(lambda: handshake)
    try:
        await endpoint.connect(factory)
        code, head = await handshake.answer
    except CancelledError:
        if handshake.transport is not None:
            handshake.transport.loseConnection()
        raise
    except Exception as e:
        send_error(request, 502, f"websocket upgrade to the model failed: "
                   f"{getattr(e, 'value', e)}", code="upstream_unavailable")
        return
    if code != 101:
        handshake.transport.loseConnection()  # type: ignore[union-attr]
        send_error(request, 502, f"the model server refused the websocket upgrade "
                   f"(HTTP {code or 'answer not understood'})", code="websocket_refused")
        return
    client: Any = channel.transport
    request.setResponseCode(101)
    client.write(head)
    splice = Splice(client, handshake.transport, activity)

    def client_gone(reason: Failure) -> None:
        splice.client_lost(reason)
        _end(request)

    channel.start_tunnel(splice.from_client, client_gone)
    handshake.begin(splice)
    await splice.done
    _end(request)


def _end(request: Request) -> None:
    """The tunnel is over: end the request (nothing is written: the channel tunnels), so
    that it is logged with its 101 rather than as a client that left."""
    if not request.finished:
        request.finish()
