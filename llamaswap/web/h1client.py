"""The data path's HTTP/1.1 client: what a reverse proxy needs from one, and nothing else.

Twisted's ``Agent`` builds, per request, a chain of Deferreds, a retrying protocol wrapper,
request and response objects, a length-enforcing body writer and a stateful parser with a
dispatcher per state; delivering one token chunk crossed eight Python frames. Profiled under
``bench/run.py`` it was about a third of llamaswap's CPU per proxied request.

Here one ``H1Connection`` carries one request at a time over a kept-alive connection:

- the request head and a body given as bytes go out in one write;
- the response head is parsed with a few ``bytes`` operations into the same ``Headers`` the
  rest of llamaswap uses, and handed over as an ``UpstreamResponse`` (``code``, ``phrase``,
  ``headers``, ``length``, ``deliverBody``: what treq and ``Relay`` expect from ``IResponse``);
- a chunked body is decoded in one pass per socket read, and everything that read carried is
  handed on as one piece: a burst of tokens becomes one write to the client, not one each;
- the body protocol's transport pauses and resumes reading the upstream socket itself, so a
  slow client slows the model server down instead of making llamaswap buffer;
- a connection goes back to ``H1Pool`` only when its response was complete, well framed and
  persistent; anything odd closes it.

Framing follows RFC 9112 §6.3: no body for ``HEAD``, 1xx, 204 and 304; chunked when it is the
last transfer coding; else ``Content-Length`` (conflicting values are refused); else until the
connection closes. Interim 1xx answers are skipped; upgrades (101) are refused.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import URI, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from llamaswap.web.unanswered import Unanswered, unanswered
from llamaswap.web.writethrough import write_through

MAX_HEAD = 64 * 1024
"""Bytes a response head (status line and headers) may take."""
MAX_CHUNK_LINE = 4096
IDLE_TIMEOUT = 240.0
"""Seconds an idle connection is kept (Twisted's pool: the same)."""

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NO_BODY_CODES = frozenset({204, 304})
_BODYLESS_REQUESTS_NEEDING_LENGTH = frozenset({b"POST", b"PUT", b"PATCH"})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class UpstreamError(Exception):
    """The request could not be sent, or no complete response head came back."""


_RESPONSE_DONE = Failure(ResponseDone("response body complete"))
"""Every complete body ends with this one reason: a ``Failure`` costs ~5 µs to build (it
walks its exception's class hierarchy) and this one, raised nowhere, holds no traceback."""


class BadResponse(UpstreamError):
    """The model server's answer is not well-formed HTTP/1.1."""


class NoAnswer(UpstreamError, Unanswered):
    """Refused, or closed before any byte of a response: the request may be sent again."""


@implementer(IPushProducer)
class _BodyTransport:
    """A body protocol's transport: pauses, resumes or stops reading the upstream, until the
    body is over; then it is detached, so a client that pauses later cannot stall a
    connection that went back to the pool."""

    def __init__(self, transport: Any) -> None:
        self._transport: Any = transport

    def detach(self) -> None:
        self._transport = None

    def pauseProducing(self) -> None:
        if self._transport is not None:
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._transport is not None:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """The body is no longer wanted (the client left): close the connection."""
        if self._transport is not None:
            transport, self._transport = self._transport, None
            transport.abortConnection()


class UpstreamResponse:
    """A response head; ``deliverBody`` starts the body's way to a protocol."""

    def __init__(self, connection: H1Connection, version: bytes, code: int, phrase: bytes,
                 headers: Headers, length: int | object) -> None:
        self._connection = connection
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length

    def deliverBody(self, protocol: Any) -> None:
        self._connection.deliver(protocol)


class ChunkedDecoder:
    """Decodes a chunked body incrementally; trailers are read and dropped."""

    def __init__(self) -> None:
        self._buffer = b""
        self._state = "size"  # size -> data -> crlf -> size ... -> trailer
        self._remaining = 0

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        """The payload pieces in ``data``; and ``None`` while the body goes on, or the bytes
        that followed its end once it ended. Raises ``BadResponse`` on broken framing."""
        if self._state == "size" and not self._buffer:
            # The usual read of a stream: exactly one whole chunk (a token), no extension.
            eol = data.find(b"\r\n", 0, 18)
            if eol > 0:
                size_line = data[:eol]
                end = len(data) - 2
                if _HEX.fullmatch(size_line) and data[end:] == b"\r\n" and \
                        int(size_line, 16) == end - eol - 2 > 0:
                    return [data[eol + 2:end]], None
        buf = self._buffer + data if self._buffer else data
        pos, end, out = 0, len(buf), []
        while pos < end:
            state = self._state
            if state == "data":
                take = min(self._remaining, end - pos)
                out.append(buf if take == end and pos == 0 else buf[pos:pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = "crlf"
                continue
            if state == "crlf":
                if end - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise BadResponse("chunk data not followed by CRLF")
                pos += 2
                self._state = "size"
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > MAX_CHUNK_LINE:
                    raise BadResponse("chunk size or trailer line too long")
                break
            line, pos = buf[pos:eol], eol + 2
            if state == "trailer":
                if not line:
                    self._buffer = b""
                    return out, buf[pos:]
                continue
            size = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size):
                raise BadResponse(f"bad chunk size {size[:20]!r}")
            self._remaining = int(size, 16)
            self._state = "data" if self._remaining else "trailer"
        self._buffer = buf[pos:]
        return out, None


class _BodyConsumer:
    """Where a request body producer writes: straight to the socket, or chunk-framed."""

    def __init__(self, transport: Any, chunked: bool) -> None:
        self._transport = transport
        self._chunked = chunked
        self.written = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.written += len(data)
        if self._chunked:
            self._transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self._transport.write(data)


class H1Connection(Protocol):
    """One kept-alive connection to a model server; one request at a time."""

    transport: Any  # a TCP transport, or TLS around one

    def __init__(self, on_idle: Callable[[H1Connection], None],
                 on_lost: Callable[[H1Connection], None]) -> None:
        self._on_idle = on_idle
        self._on_lost = on_lost
        self.state = "idle"  # idle -> head -> body [-> done: body not yet taken] -> idle | closed
        self.idle_timer: Any = None
        self.key: Any = None
        self.keepalive = 0.0
        """Idle seconds before TCP keep-alive probes (``timeouts.keepalive``); 0: none."""
        self._reset()

    def _reset(self) -> None:
        self._method = b""
        self._head_d: Deferred[UpstreamResponse] | None = None
        self._buffer = b""
        self._decoder: ChunkedDecoder | None = None
        self._remaining: int | None = None  # Content-Length left; None: chunked or to close
        self._persistent = False
        self._body_sent = True
        self._producer: Any = None
        self._protocol: Any = None
        self._body_transport: _BodyTransport | None = None
        self._early: list[bytes] = []
        self._ended: Failure | None = None
        self._answered = False

    # -- the connection ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        write_through(self.transport)
        if self.keepalive > 0:
            enable_keepalive(self.transport, self.keepalive)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        state, self.state = self.state, "closed"
        self._on_lost(self)
        if state == "head":
            why = reason.getErrorMessage() or type(reason.value).__name__
            self._fail_head(UpstreamError("the connection closed before a complete answer: "
                                          + why) if self._answered else
                            NoAnswer("the connection closed before any answer: " + why,
                                     sent=True))
        elif state == "body":
            if self._decoder is None and self._remaining is None:
                self._end_body(Failure(PotentialDataLoss()))  # delimited by the close
            else:
                self._end_body(reason)

    def dataReceived(self, data: bytes) -> None:
        if self.state == "body":
            self._body_data(data)
        elif self.state == "head":
            self._answered = True
            self._buffer += data
            self._parse_head()
        else:  # nothing was asked: a server talking out of turn is not reused
            self.state = "closed"
            self.transport.abortConnection()

    # -- sending ----------------------------------------------------------------------------

    def send(self, method: bytes, target: bytes, host: bytes, headers: Headers,
             body: bytes | IBodyProducer | None) -> Deferred[UpstreamResponse]:
        """Send a request; fires with the response head (``UpstreamResponse``)."""
        if self.state != "idle":
            raise RuntimeError(f"request on a connection that is {self.state}")
        self._reset()
        self.state = "head"
        self._method = method
        head = self._head_d = Deferred(self._cancel)
        lines = [method, b" ", target, b" HTTP/1.1\r\n"]
        if not headers.hasHeader(b"host"):  # as Agent: a Host the caller set wins
            lines += [b"Host: ", host, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            if name.lower() in _FRAMING:
                continue  # the body's framing is this client's to state
            for value in values:
                lines += [name, b": ", value, b"\r\n"]
        if body is None:
            if method in _BODYLESS_REQUESTS_NEEDING_LENGTH:
                lines.append(b"Content-Length: 0\r\n")
            lines.append(b"\r\n")
            self.transport.write(b"".join(lines))
        elif isinstance(body, bytes):
            lines += [b"Content-Length: %d\r\n\r\n" % len(body), body]
            self.transport.write(b"".join(lines))
        else:
            length = body.length
            chunked = length is UNKNOWN_LENGTH
            lines.append(b"Transfer-Encoding: chunked\r\n\r\n" if chunked
                         else b"Content-Length: %d\r\n\r\n" % length)
            self.transport.write(b"".join(lines))
            self._produce(body, chunked)
        return head  # (a body producer may already have failed it)

    def _produce(self, producer: IBodyProducer, chunked: bool) -> None:
        self._body_sent = False
        self._producer = producer
        consumer = _BodyConsumer(self.transport, chunked)
        self.transport.registerProducer(producer, True)

        def sent(_: object) -> None:
            if self._producer is not producer:
                return  # the connection is over already
            self._producer = None
            self.transport.unregisterProducer()
            if chunked:
                self.transport.write(b"0\r\n\r\n")
            elif consumer.written != producer.length:
                self._give_up(UpstreamError(f"the request body had {consumer.written} bytes, "
                                            f"not the {producer.length} announced"))
                return
            self._body_sent = True

        def failed(failure: Failure) -> None:
            if self._producer is not producer:
                return
            self._producer = None
            self.transport.unregisterProducer()
            self._give_up(UpstreamError(f"reading the request body failed: "
                                        f"{failure.getErrorMessage()}"))

        producer.startProducing(consumer).addCallbacks(sent, failed)

    def _give_up(self, error: Exception) -> None:
        """Abort: the request cannot be completed on this connection."""
        if self.state == "head":
            self._fail_head(error)
        self.state = "closed"
        self.transport.abortConnection()

    def _cancel(self, d: Deferred[UpstreamResponse]) -> None:
        """Nobody waits for the answer any more (the client left): drop the connection."""
        self._head_d = None
        self.state = "closed"
        self._stop_producer()
        self.transport.abortConnection()

    def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            self.transport.unregisterProducer()
            producer.stopProducing()

    def _fail_head(self, error: Exception) -> None:
        d, self._head_d = self._head_d, None
        self._stop_producer()
        if d is not None:
            d.errback(Failure(error))

    # -- the response head ------------------------------------------------------------------

    def _parse_head(self) -> None:
        while self.state == "head":
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._give_up(BadResponse(f"response head over {MAX_HEAD} bytes"))
                return
            head, self._buffer = self._buffer[:end], self._buffer[end + 4:]
            try:
                response = self._response(head)
            except BadResponse as e:
                self._give_up(e)
                return
            if response is None:
                continue  # an interim 1xx answer: the real one follows
            rest, self._buffer = self._buffer, b""
            self.state = "body"
            self._body_transport = _BodyTransport(self.transport)
            d, self._head_d = self._head_d, None
            if d is not None:
                d.callback(response)
            if self.state == "body" and (rest or self._remaining == 0):
                self._body_data(rest)

    def _response(self, head: bytes) -> UpstreamResponse | None:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        version = status[0]
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(status) < 2 \
                or len(status[1]) != 3 or not status[1].isdigit():
            raise BadResponse(f"bad status line {lines[0][:80]!r}")
        code = int(status[1])
        headers = Headers()
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise BadResponse(f"bad header line {line[:80]!r}")
            headers.addRawHeader(name, value.strip(b" \t"))
        if 100 <= code < 200:
            if code == 101:
                raise BadResponse("the model server switched protocols (101): not supported")
            return None
        connection = {t.strip().lower() for v in headers.getRawHeaders(b"connection", [])
                      for t in v.split(b",")}
        self._persistent = version == b"HTTP/1.1" and b"close" not in connection
        length: int | object = UNKNOWN_LENGTH
        codings = [t.strip().lower() for v in headers.getRawHeaders(b"transfer-encoding", [])
                   for t in v.split(b",") if t.strip()]
        lengths = headers.getRawHeaders(b"content-length")
        if lengths is not None and not codings:
            values = {v.strip() for value in lengths for v in value.split(b",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise BadResponse(f"bad Content-Length {b', '.join(lengths)[:80]!r}")
            length = int(next(iter(values)))
        if self._method == b"HEAD" or code in _NO_BODY_CODES:
            self._remaining = 0
        elif codings:
            if codings[-1] == b"chunked":
                self._decoder = ChunkedDecoder()
            else:
                self._persistent = False  # delimited by the close
        elif isinstance(length, int):
            self._remaining = length
        else:
            self._persistent = False
        return UpstreamResponse(self, version, code, b"" if len(status) < 3 else status[2],
                                headers, length)

    # -- the response body ------------------------------------------------------------------

    def _body_data(self, data: bytes) -> None:
        leftover: bytes | None = None
        if self._decoder is not None:
            try:
                pieces, leftover = self._decoder.feed(data)
            except BadResponse as e:
                self._body_failed(e)
                return
            payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        elif self._remaining is not None:
            payload = data[:self._remaining]
            self._remaining -= len(payload)
            if not self._remaining:
                leftover = data[len(payload):]
        else:
            payload = data
        if payload:
            self._pass_on(payload)
        if leftover is not None and self.state == "body":
            self._complete(extra=bool(leftover))

    def _pass_on(self, payload: bytes) -> None:
        if self._protocol is None:
            self._early.append(payload)
        else:
            self._protocol.dataReceived(payload)

    def _complete(self, extra: bool) -> None:
        """The response is over: reuse the connection if it may be, then tell the body."""
        if self._body_transport is not None:
            self._body_transport.detach()
        reusable = self._persistent and not extra and self._body_sent
        self._stop_producer()  # an answer that came before the whole body was sent
        if not reusable:
            self.state = "closed"
            self.transport.loseConnection()
        elif self._protocol is None:
            self.state = "done"  # reused once the body is handed over, not before
        else:
            self._make_idle()
        self._end_body(_RESPONSE_DONE)

    def _make_idle(self) -> None:
        self.state = "idle"
        self.transport.resumeProducing()  # a paused client must not stall the next one
        self._on_idle(self)

    def _body_failed(self, error: Exception) -> None:
        self.state = "closed"
        if self._body_transport is not None:
            self._body_transport.detach()
        self.transport.abortConnection()
        self._end_body(Failure(error))

    def _end_body(self, reason: Failure) -> None:
        self._ended = reason
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connectionLost(reason)

    def deliver(self, protocol: Any) -> None:
        """Hand the body to ``protocol`` (``IProtocol``): what arrived already, then the rest."""
        transport = self._body_transport or _BodyTransport(None)
        protocol.makeConnection(transport)
        early, self._early = self._early, []
        if early:
            protocol.dataReceived(b"".join(early))
        if self._ended is None:
            self._protocol = protocol
            return
        ended, self._ended = self._ended, None
        if self.state == "done":
            self._make_idle()
        protocol.connectionLost(ended)


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, build: Callable[[], H1Connection]) -> None:
        self._build = build

    def buildProtocol(self, addr: Any) -> H1Connection:
        return self._build()


def enable_keepalive(transport: Any, idle: float) -> None:
    """TCP keep-alive probes after ``idle`` seconds of silence, every ``idle`` seconds (Go's
    dialer ``KeepAlive``), where the platform lets the interval be set; a transport that is
    not a socket (TLS wraps one: its ``getHandle``) is left as it is."""
    try:
        sock = transport.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        seconds = max(1, int(idle))
        for option in ("TCP_KEEPIDLE", "TCP_KEEPINTVL"):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), seconds)
    except (AttributeError, OSError):
        pass


class H1Pool:
    """Idle connections per model server origin, reused most recently used first."""

    def __init__(self, reactor: Any, max_idle_per_origin: int = 256,
                 idle_timeout: float = IDLE_TIMEOUT, keepalive: float = 0.0) -> None:
        self._reactor = reactor
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_timeout = idle_timeout
        self.keepalive = keepalive
        self.idle_timeouts: dict[Any, float] = {}
        """Per origin key: seconds an idle connection is kept (0: as long as it lasts)."""
        self.keepalives: dict[Any, float] = {}
        """Per origin key: ``H1Connection.keepalive`` of its new connections."""
        self._idle: dict[Any, list[H1Connection]] = {}
        self._open: set[H1Connection] = set()
        self._closed_waiters: list[Deferred[None]] = []

    def connection(self, key: Any, endpoint: IStreamClientEndpoint) -> Deferred[H1Connection]:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.idle_timer is not None and connection.idle_timer.active():
                connection.idle_timer.cancel()
            connection.idle_timer = None
            if connection.state == "idle":
                return succeed(connection)

        def build() -> H1Connection:
            connection = H1Connection(self._idle_again, self._lost)
            connection.key = key
            connection.keepalive = self.keepalives.get(key, self.keepalive)
            self._open.add(connection)
            return connection

        d: Deferred[Any] = endpoint.connect(_ConnectionFactory(build))
        return d

    def _idle_again(self, connection: H1Connection) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.max_idle_per_origin:
            oldest = idle.pop(0)
            self._forget_timer(oldest)
            oldest.state = "closed"
            oldest.transport.loseConnection()
        idle.append(connection)
        timeout = self.idle_timeouts.get(connection.key, self.idle_timeout)
        if timeout > 0:
            connection.idle_timer = self._reactor.callLater(timeout, self._expire, connection)

    def _expire(self, connection: H1Connection) -> None:
        connection.idle_timer = None
        if connection.state == "idle":
            connection.state = "closed"
            connection.transport.loseConnection()

    def _forget_timer(self, connection: H1Connection) -> None:
        if connection.idle_timer is not None and connection.idle_timer.active():
            connection.idle_timer.cancel()
        connection.idle_timer = None

    def _lost(self, connection: H1Connection) -> None:
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
                self._forget_timer(connection)
                connection.state = "closed"
                connection.transport.loseConnection()
        if not self._open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed_waiters.append(d)
        return d


class H1Client:
    """Requests to model servers by URL, over ``H1Pool``."""

    MEMO_SIZE = 1024

    def __init__(self, reactor: Any, endpoints: IAgentEndpointFactory,
                 max_idle_per_origin: int = 256, idle_timeout: float = IDLE_TIMEOUT,
                 keepalive: float = 0.0) -> None:
        self.pool = H1Pool(reactor, max_idle_per_origin, idle_timeout, keepalive)
        self._endpoints = endpoints
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

    def origin_of(self, url: str) -> Any:
        """The pool's key for ``url``'s origin (scheme, host, port)."""
        return self._target(url)[0]

    async def request(self, method: bytes, url: str, headers: Headers,
                      body: bytes | IBodyProducer | None) -> UpstreamResponse:
        """Send one request; return its response head (cancellable until then)."""
        key, endpoint, host, target = self._target(url)
        try:
            connection = await self.pool.connection(key, endpoint)
        except Exception as e:
            refused = unanswered(e)
            if refused is None:
                raise
            raise NoAnswer(f"connection refused: {e}", sent=False) from e
        return await connection.send(method, target, host, headers, body)
