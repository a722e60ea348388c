# -*- test-case-name: tests.test_fast_channel -*-
"""Request heads parsed in one pass: twisted.web's ``HTTPChannel``, less CPU per request.

``HTTPChannel`` parses a head line by line (``LineReceiver``: one split of the buffer, one
``lineReceived`` and one ``headerReceived`` per line, each name canonicalised, each value
sanitised). ``FastParserChannel`` parses a head that arrived whole (the usual case: one ``recv``
holds it) in one pass and leaves the very state the line parser would have left. It takes
only heads the line parser would accept without a word: anything else (a bad or folded
header, a head split across reads, a size or count limit, an unusual ``Transfer-Encoding``,
...) goes to ``HTTPChannel`` unchanged, which answers as it always did.

Private state used: ``HTTPChannel``'s name-mangled ``__first_line`` and ``__header``, its
``_command``/``_path``/``_version``, ``_receivedHeaderSize``/``_receivedHeaderCount``,
``_busyReceiving``, ``_maybeChooseTransferDecoder``, ``LineReceiver._buffer``,
``Headers._rawHeaders`` and ``http_headers._nameEncoder``. The gate (``WORKS``) feeds canned
requests, valid and not, through a channel with it and through ``HTTPChannel`` and
requires the same requests and the same bytes answered; ``tests/test_fast_channel.py``
compares both on many more.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.iweb import INonQueuedRequestFactory

from llamaswap.web.fast.gate import gate

_nameEncoder: Any
_InvalidName: type[Exception]
try:
    from twisted.web.http_headers import InvalidHeaderName as _InvalidName
    from twisted.web.http_headers import _nameEncoder
except ImportError:  # older Twisted keeps header names another way: the gate fails
    _nameEncoder, _InvalidName = None, ValueError

_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
# _parseRequestLine's request-target: printable, no space, bytes 33 to 176.
_TARGET_BYTES = bytes(range(33, 177))
# RFC 9110 section 5.6.2's tchar: what a method and a header name are made of.
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CONTENT_LENGTH = b"Content-Length"
_TRANSFER_ENCODING = b"Transfer-Encoding"
# Known header names and methods, as clients choose them: bounded in number and length.
_CACHE_LIMIT = 1000
_CACHED_LENGTH = 64


def _is_token(value: bytes) -> bool:
    return bool(value) and not value.translate(None, _TOKEN_BYTES)


_methods: set[bytes] = {b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}
_names: dict[bytes, bytes] = {}  # a header name as sent -> its canonical form


class Head(NamedTuple):
    """A request head, as ``HTTPChannel`` would have stored it."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    framing: tuple[bytes, bytes] | None  # the Content-Length or Transfer-Encoding header
    size: int  # what HTTPChannel counts against totalHeadersSize: the lines, without CRLFs


def parse_head(head: bytes, max_size: int, max_headers: int) -> Head | None:
    """Parse a request head (without its final empty line), or ``None`` unless
    ``HTTPChannel`` would accept it as is: then it must go through ``HTTPChannel``."""
    crlfs = head.count(b"\r\n")
    # A lone CR or LF, or a NUL, is refused by HTTPChannel wherever it is.
    if head.count(b"\r") != crlfs or head.count(b"\n") != crlfs or b"\x00" in head:
        return None
    if len(head) - 2 * crlfs > max_size or crlfs > max_headers:
        return None
    lines = head.split(b"\r\n")
    request = _request_line(lines[0])
    if request is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    framing = None
    for line in lines[1:]:
        raw_name, colon, value = line.partition(b":")
        name = _names.get(raw_name) or _canonical(raw_name)
        if not colon or name is None:
            return None  # also a folded line: a name cannot start with a space or tab
        value = value.strip(b" \t")
        if name == _CONTENT_LENGTH or name == _TRANSFER_ENCODING:
            if framing is not None or not _plain_framing(name, value):
                return None
            framing = (name, value)
        headers.append((name, value))
    return Head(*request, headers, framing, len(head) - 2 * crlfs)


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``twisted.web.http._parseRequestLine`` without its loop over every byte."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if version not in _VERSIONS or not target or target.translate(None, _TARGET_BYTES):
        return None
    if method not in _methods:
        if not _is_token(method):
            return None
        if len(_methods) < _CACHE_LIMIT and len(method) <= _CACHED_LENGTH:
            _methods.add(method)
    return method, target, version


def _canonical(raw_name: bytes) -> bytes | None:
    try:
        name: bytes = _nameEncoder.encode(raw_name)
    except _InvalidName:
        return None
    if len(_names) < _CACHE_LIMIT and len(raw_name) <= _CACHED_LENGTH:
        _names[raw_name] = name
    return name


def _plain_framing(name: bytes, value: bytes) -> bool:
    """A length HTTPChannel takes as it is: digits, or ``chunked`` (``identity``, which it
    ignores, and anything it refuses go its own way)."""
    if name == _CONTENT_LENGTH:
        return value.isdigit()
    return value.lower() == b"chunked"


_non_queued_factories: dict[Any, bool] = {}


def _non_queued(factory: Any) -> bool:
    """``INonQueuedRequestFactory.providedBy``, asked once per request factory."""
    known = _non_queued_factories.get(factory)
    if known is None:
        known = bool(INonQueuedRequestFactory.providedBy(factory))
        if len(_non_queued_factories) < _CACHE_LIMIT:
            _non_queued_factories[factory] = known
    return known


class FastParserChannel(HTTPChannel):
    """``HTTPChannel`` parsing whole request heads in one pass (module docstring); mixed in
    just above ``HTTPChannel`` under any subclass by ``with_fast_parser``."""

    def dataReceived(self, data: bytes) -> None:
        if not self._head_received(data):
            super().dataReceived(data)

    def _head_received(self, data: bytes) -> bool:
        """Take a request whose head is whole at the start of ``data``, as
        ``HTTPChannel.dataReceived`` would; ``False`` if it is not for this path."""
        channel: Any = self
        if not self._at_request_start():
            return False
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = parse_head(data[:end], channel.totalHeadersSize, channel.maxHeaders)
        if head is None:
            return False
        channel.resetTimeout()
        channel._busyReceiving = True
        try:
            channel._buffer = data[end + 4:]
            if not self._start_request(head):
                # Disconnected by the request's creation: the line parser stops after the
                # request line, leaving the rest unparsed.
                channel._buffer = data[data.find(b"\r\n") + 2:] + channel._buffer[
                    len(data) - end - 4:]
                return True
            self._headers_received(head)
            if self._disconnecting():  # e.g. a 413 before the body
                return True
            rest, channel._buffer = channel._buffer, b""
        finally:
            channel._busyReceiving = False
        if rest:
            LineReceiver.dataReceived(channel, rest)
        return True

    def _at_request_start(self) -> bool:
        """The line parser waits for a request line, with nothing buffered."""
        channel: Any = self
        transport: Any = channel.transport
        return bool(channel.line_mode and not channel._buffer and not channel._busyReceiving
                    and not channel.paused and channel.persistent
                    and channel._HTTPChannel__first_line
                    and not channel._HTTPChannel__header
                    and transport is not None and not transport.disconnecting
                    and channel.MAX_LENGTH >= channel.totalHeadersSize)

    def _start_request(self, head: Head) -> bool:
        """HTTPChannel.lineReceived for the request line; ``False`` if that disconnected."""
        channel: Any = self
        factory = channel.requestFactory
        if _non_queued(factory):
            request = factory(channel)
        else:
            request = factory(channel, len(channel.requests))
        channel.requests.append(request)
        channel._receivedHeaderSize = len(head.method) + len(head.target) + len(head.version) + 2
        channel._HTTPChannel__first_line = 0
        channel._command = head.method
        channel._path = head.target
        channel._version = head.version
        return not self._disconnecting()

    def _disconnecting(self) -> bool:
        """What makes LineReceiver stop after a line."""
        transport: Any = getattr(self, "transport", None)
        return bool(transport and transport.disconnecting)

    def _headers_received(self, head: Head) -> None:
        """HTTPChannel.headerReceived for every header, then the end of the head."""
        channel: Any = self
        if head.framing is not None:
            channel._maybeChooseTransferDecoder(*head.framing)
        raw = channel.requests[-1].requestHeaders._rawHeaders
        for name, value in head.headers:
            values = raw.get(name)
            if values is None:
                raw[name] = [value]
            else:
                values.append(value)
        channel._receivedHeaderCount = len(head.headers)
        channel._receivedHeaderSize = head.size
        channel._HTTPChannel__header = b""
        channel.allHeadersReceived()
        if channel.length == 0:
            channel.allContentReceived()
        else:
            channel.setRawMode()


_classes: dict[type, type] = {}


def with_fast_parser(base: type) -> type:
    """``base`` (``HTTPChannel`` or a subclass) with ``FastParserChannel`` placed right above
    ``HTTPChannel`` in its method order: whatever ``base`` does around ``dataReceived``
    still runs, and only ``HTTPChannel``'s own parsing is replaced."""
    if not issubclass(base, HTTPChannel):
        raise TypeError(f"{base.__name__} is not an HTTPChannel")
    if base is HTTPChannel or issubclass(base, FastParserChannel):
        return FastParserChannel if base is HTTPChannel else base
    fast = _classes.get(base)
    if fast is None:
        fast = _classes[base] = type(f"FastParser{base.__name__}", (base, FastParserChannel),
                                     {})
    return fast


# -- the gate ---------------------------------------------------------------------------------


class _Probe(http.Request):
    """Answers with what the channel made of the request, so two answers compare parsers."""

    def process(self) -> None:
        content = self.content.read() if self.content is not None else b""
        headers = self.requestHeaders
        body = repr((self.method, self.uri, self.clientproto, content, self.args,
                     sorted(headers.getAllRawHeaders()), headers.getRawHeaders(b"host"),
                     headers.getRawHeaders(b"x-twice"), headers.hasHeader(b"content-type"),
                     self.getHeader(b"Content-Length"))).encode()
        self.setHeader(b"Content-Length", b"%d" % len(body))
        self.write(body)
        self.finish()


# (request bytes, whether the one-pass parser must take all of them)
_CANNED = (
    (b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Twice: 1\r\nx-twice: 2\r\nUser-Agent: t\r\n\r\n",
     True),
    (b"POST /p HTTP/1.1\r\nhost: y\r\nContent-Length: 5\r\ncontent-type: application/json\r\n"
     b"\r\nhello", True),
    (b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    (b"PUT /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /next HTTP/1.1\r\nHost: z\r\n\r\n",
     False),  # the pipelined request goes to the line parser: it was not whole when read
    (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", False),
)


def _answer(channel_class: type, data: bytes) -> tuple[bytes, bool]:
    lines = []

    class Counted(channel_class):  # type: ignore[misc]
        def lineReceived(self, line: bytes) -> None:
            lines.append(line)
            super().lineReceived(line)

    channel = Counted()
    channel.requestFactory = _Probe
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    channel.connectionLost(Exception("gate done"))
    return transport.value(), not lines


@gate("parser")
def _works() -> bool:
    """Canned requests get the same answers through the mixin as through ``HTTPChannel``,
    and the valid ones take the one-pass path."""
    if _nameEncoder is None:
        return False
    fast_class = with_fast_parser(HTTPChannel)
    for data, must_be_fast in _CANNED:
        fast, fast_taken = _answer(fast_class, data)
        stock, _ = _answer(HTTPChannel, data)
        if fast != stock or not stock or (must_be_fast and not fast_taken):
            return False
    return True


WORKS = _works()
"""The one-pass parser behaves as ``HTTPChannel`` on this Twisted (checked once, at import)."""
