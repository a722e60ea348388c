"""One kept-alive HTTP/1.1 connection to a model server or peer; one request at a time.

The response is framed by llhttp (through ``httptools``): status line, headers, chunked
decoding, ``Content-Length``, interim 1xx answers, bodyless 204/304. What is llamaswap's own:

- the request head and a body given as bytes go out in one write;
- the response head is handed over as an ``UpstreamResponse`` (``code``, ``phrase``,
  ``headers``, ``length``, ``deliverBody``: what ``Relay`` expects of ``IResponse``);
- every body byte one socket read carried is handed on as one piece: a burst of tokens
  becomes one write to the client, not one each;
- the body protocol's transport (``IPushProducer``) pauses and resumes reading the upstream
  socket, so a slow client slows the model server down instead of making llamaswap buffer;
- the connection is reusable only when its response was complete, persistent (HTTP/1.1, no
  ``Connection: close``), nothing followed it, and the request body was wholly sent.

A response to ``HEAD`` ends with its head (llhttp cannot be told that a head announcing a
length has no body); such a connection is closed rather than reused. A body delimited by the
connection's close ends with ``PotentialDataLoss``, as Twisted's client reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from llamaswap.upstream.errors import BadResponse, NoAnswer, UpstreamError

MAX_HEAD = 64 * 1024
"""Bytes a response head (status line and headers, interim answers included) may take."""

_BODYLESS_REQUESTS_NEEDING_LENGTH = frozenset({b"POST", b"PUT", b"PATCH"})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})

_RESPONSE_DONE = Failure(ResponseDone("response body complete"))
"""Every complete body ends with this one reason: a ``Failure`` costs ~5 µs to build (it
walks its exception's class hierarchy) and this one, raised nowhere, holds no traceback."""


class _HeadersOnly(Exception):
    """Raised in the parser's callback to end a ``HEAD`` response at its head."""


class _Extra(Exception):
    """Raised in the parser's callback when bytes follow a complete response."""


@implementer(IPushProducer)
class _BodyTransport:
    """A body protocol's transport: pauses, resumes or stops reading the upstream, until the
    body is over; then it is detached, so a client that pauses later cannot stall a
    connection that went back to the pool."""

    def __init__(self, connection: UpstreamConnection | None) -> None:
        self._connection = connection
        self._transport: Any = connection.transport if connection is not None else None

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
        connection = self._connection
        if self._transport is not None and connection is not None:
            self._transport = None
            connection.abandon()


class UpstreamResponse:
    """A response head; ``deliverBody`` starts the body's way to a protocol."""

    def __init__(self, connection: UpstreamConnection, version: str, code: int,
                 phrase: bytes, headers: Headers, length: int | object) -> None:
        self._connection = connection
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length

    def deliverBody(self, protocol: Any) -> None:
        self._connection.deliver(protocol)


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


def _tokens(headers: Headers, name: bytes) -> list[bytes]:
    return [t.strip().lower() for v in headers.getRawHeaders(name, [])
            for t in v.split(b",") if t.strip()]


class UpstreamConnection(Protocol):
    """One kept-alive connection; ``send`` one request, read its answer, then the next.

    ``state``: idle -> head -> body [-> done: body complete, not yet taken] -> idle | closed.
    ``reused`` is set by the pool when it hands out a connection that served before.
    """

    transport: Any  # a TCP transport, or TLS around one

    def __init__(self, on_idle: Callable[[UpstreamConnection], None],
                 on_lost: Callable[[UpstreamConnection], None],
                 on_made: Callable[[UpstreamConnection], None] | None = None) -> None:
        self._on_idle = on_idle
        self._on_lost = on_lost
        self._on_made = on_made
        self.state = "idle"
        self.reused = False
        self.idle_timer: Any = None
        self.key: Any = None
        self._reset()

    def _reset(self) -> None:
        self._method = b""
        self._parser: Any = None
        self._head_d: Deferred[UpstreamResponse] | None = None
        self._head_bytes = 0
        self._headers = Headers()
        self._code = 0
        self._phrase = b""
        self._response: UpstreamResponse | None = None
        self._until_close = False
        self._persistent = False
        self._message_done = False
        self._extra = False
        self._error: Exception | None = None
        self._pieces: list[bytes] = []
        self._body_sent = True
        self._body_producer: Any = None
        self._protocol: Any = None
        self._body_transport: _BodyTransport | None = None
        self._early: list[bytes] = []
        self._ended: Failure | None = None
        self._answered = False

    # -- the connection ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        if self._on_made is not None:
            self._on_made(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        state, self.state = self.state, "closed"
        self._parser = None  # (it refers back to this connection: no cycle left behind)
        self._on_lost(self)
        if state == "head":
            why = reason.getErrorMessage() or type(reason.value).__name__
            self._fail_head(UpstreamError("the connection closed before a complete answer: "
                                          + why) if self._answered else
                            NoAnswer("the connection closed before any answer: " + why,
                                     sent=True, reused=self.reused))
        elif state == "body":
            if self._body_transport is not None:
                self._body_transport.detach()
            self._end_body(Failure(PotentialDataLoss()) if self._until_close else reason)

    def dataReceived(self, data: bytes) -> None:
        state = self.state
        if state != "body" and state != "head":
            # nothing was asked (or the answer is over): a server talking out of turn
            self.state = "closed"
            self.transport.abortConnection()
            return
        self._answered = True
        if state == "head":
            self._head_bytes += len(data)
        pieces: list[bytes] = []
        self._pieces = pieces
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self._error = BadResponse("the server switched protocols (101): not supported")
        except HttpParserError as e:
            if not self._message_done:
                cause = e.__context__
                if isinstance(cause, _HeadersOnly):
                    self._message_done = True
                elif isinstance(cause, BadResponse):
                    self._error = cause
                else:
                    self._error = BadResponse(f"malformed response: {e}")
        if self._head_d is not None:
            if self._error is not None:
                self._give_up(self._error)
                return
            if self._response is None:
                if self._head_bytes > MAX_HEAD:
                    self._give_up(BadResponse(f"response head over {MAX_HEAD} bytes"))
                return
            self.state = "body"
            self._body_transport = _BodyTransport(self)
            d, self._head_d = self._head_d, None
            d.callback(self._response)
            if self.state != "body":
                return  # the receiver gave up on it
        if pieces:
            self._pass_on(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if self.state != "body":
            return
        if self._error is not None:
            self._body_failed(self._error)
        elif self._message_done:
            self._complete()

    # -- the parser's callbacks (httptools) -------------------------------------------------

    def on_message_begin(self) -> None:
        if self._message_done:
            self._extra = True
            raise _Extra()

    def on_status(self, status: bytes) -> None:
        self._phrase += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is None:  # (trailers, after a chunked body, are dropped)
            self._headers.addRawHeader(name, value.rstrip(b" \t"))

    def on_headers_complete(self) -> None:
        parser = self._parser
        code = parser.get_status_code()
        headers = self._headers
        if code < 200:
            if code == 101:
                raise BadResponse("the server switched protocols (101): not supported")
            self._headers, self._phrase = Headers(), b""  # an interim answer: skipped
            return
        version = parser.get_http_version()
        codings = _tokens(headers, b"transfer-encoding")
        length: int | object = UNKNOWN_LENGTH
        if not codings:
            lengths = headers.getRawHeaders(b"content-length")
            if lengths:
                length = int(lengths[0])
        bodyless = self._method == b"HEAD" or code in (204, 304)
        self._until_close = not bodyless and (
            codings[-1] != b"chunked" if codings else length is UNKNOWN_LENGTH)
        self._persistent = (version == "1.1" and parser.should_keep_alive()
                            and not self._until_close and self._method != b"HEAD")
        self._code = code
        self._response = UpstreamResponse(self, version, code, self._phrase, headers, length)
        if self._method == b"HEAD":
            raise _HeadersOnly()

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)

    def on_message_complete(self) -> None:
        if self._response is not None:  # else the end of an interim answer
            self._message_done = True

    # -- sending ----------------------------------------------------------------------------

    def send(self, method: bytes, target: bytes, host: bytes, headers: Headers,
             body: bytes | IBodyProducer | None) -> Deferred[UpstreamResponse]:
        """Send a request; fires with the response head (``UpstreamResponse``)."""
        if self.state != "idle":
            raise RuntimeError(f"request on a connection that is {self.state}")
        self._reset()
        self.state = "head"
        self._method = method
        self._parser = HttpResponseParser(self)
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
        self._body_producer = producer
        consumer = _BodyConsumer(self.transport, chunked)
        self.transport.registerProducer(producer, True)

        def sent(_: object) -> None:
            if self._body_producer is not producer:
                return  # the connection is over already
            self._body_producer = None
            self.transport.unregisterProducer()
            if chunked:
                self.transport.write(b"0\r\n\r\n")
            elif consumer.written != producer.length:
                self._give_up(UpstreamError(f"the request body had {consumer.written} bytes, "
                                            f"not the {producer.length} announced"))
                return
            self._body_sent = True

        def failed(failure: Failure) -> None:
            if self._body_producer is not producer:
                return
            self._body_producer = None
            self.transport.unregisterProducer()
            self._give_up(UpstreamError(f"reading the request body failed: "
                                        f"{failure.getErrorMessage()}"))

        producer.startProducing(consumer).addCallbacks(sent, failed)

    def abandon(self) -> None:
        """The body is no longer wanted: close the connection (its body protocol still
        hears how it ended, as after ``stopProducing`` on any transport)."""
        self._persistent = False
        self.transport.abortConnection()

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
        self._stop_body_producer()
        self.transport.abortConnection()

    def _stop_body_producer(self) -> None:
        producer, self._body_producer = self._body_producer, None
        if producer is not None:
            self.transport.unregisterProducer()
            producer.stopProducing()

    def _fail_head(self, error: Exception) -> None:
        d, self._head_d = self._head_d, None
        self._stop_body_producer()
        if d is not None:
            d.errback(Failure(error))

    # -- the response body ------------------------------------------------------------------

    def _pass_on(self, payload: bytes) -> None:
        if self._protocol is None:
            self._early.append(payload)
        else:
            self._protocol.dataReceived(payload)

    def _complete(self) -> None:
        """The response is over: reuse the connection if it may be, then tell the body."""
        if self._body_transport is not None:
            self._body_transport.detach()
        reusable = self._persistent and not self._extra and self._body_sent
        self._stop_body_producer()  # an answer that came before the whole body was sent
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
        self._parser = None
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
