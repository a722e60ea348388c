# -*- test-case-name: tests.test_fastchannel -*-
"""twisted.web's server side, with less CPU per request and the same behaviour.

A fixed answer through a plain twisted.web ``Site`` costs several times what the bytes cost,
most of it in bookkeeping that repeats per request although nothing changed:

- ``HTTPChannel`` parses the request head line by line (``LineReceiver``: one split of the
  buffer, one ``lineReceived`` and one ``headerReceived`` per line, the header name
  canonicalised twice, the value sanitised). ``FastChannel`` parses a head that arrived whole
  (the usual case: one ``recv`` holds it) in one pass and feeds the very state the line
  parser would have left. It takes only heads the line parser would accept without a word:
  anything else (a bad or folded header, a head split across reads, a size or count limit,
  an unusual ``Transfer-Encoding``, ...) goes to ``HTTPChannel`` unchanged, which answers
  as it always did (400, or a closed connection for an overlong line).
- every ``Request`` asks the transport for both addresses (``getHost`` is a ``getsockname``
  system call) and whether it is TLS (an interface adaptation): they cannot change during a
  connection, so ``FastChannel`` asks once.
- ``Request.process`` formats the ``Date`` header each time; ``FastRequestMixin`` formats it
  once a second.

This leans on ``HTTPChannel``'s private state (its name-mangled ``__first_line`` and
``__header``, ``LineReceiver``'s buffer) and on ``Headers._rawHeaders``:
``tests/test_fastchannel.py`` compares both channels' state and answers on many heads, valid
and not, so a Twisted release that changes them fails there first. At run time the fast path
is taken only if that state is where it is expected (``SUPPORTED``); otherwise every request
goes through twisted.web's own code, slower but unchanged.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.basic import LineReceiver
from twisted.python import failure
from twisted.web import resource, server
from twisted.web._abnf import _istoken
from twisted.web.http import HTTPChannel, datetimeToString, unquote
from twisted.web.http_headers import Headers, InvalidHeaderName, _nameEncoder
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.server import version as _server_version

_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
# _parseRequestLine's request-target: printable, no space, bytes 33 to 176.
_TARGET_BYTES = bytes(range(33, 177))
_CONTENT_LENGTH = b"Content-Length"
_TRANSFER_ENCODING = b"Transfer-Encoding"
# Known header names and methods, as clients choose them: bounded in number and length.
_CACHE_LIMIT = 1000
_CACHED_LENGTH = 64



def _internals_present() -> bool:
    """Whether this Twisted keeps the private state the fast path reads and writes."""
    channel = HTTPChannel()
    return (all(hasattr(channel, name) for name in (
        "_HTTPChannel__first_line", "_HTTPChannel__header", "_receivedHeaderSize",
        "_receivedHeaderCount", "_busyReceiving", "_buffer", "line_mode",
        "_maybeChooseTransferDecoder", "allContentReceived", "totalHeadersSize", "maxHeaders"))
        and hasattr(Headers(), "_rawHeaders")
        and all(hasattr(server.Request, name) for name in ("_handleStar", "processingFailed")))


SUPPORTED = _internals_present()
"""The fast path's preconditions hold for the installed Twisted (checked once, at import)."""

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
        if not _istoken(method):
            return None
        if len(_methods) < _CACHE_LIMIT and len(method) <= _CACHED_LENGTH:
            _methods.add(method)
    return method, target, version


def _canonical(raw_name: bytes) -> bytes | None:
    try:
        name = _nameEncoder.encode(raw_name)
    except InvalidHeaderName:
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


class FastChannel(HTTPChannel):
    """``HTTPChannel`` parsing whole request heads in one pass, and caching what cannot
    change during a connection (module docstring)."""

    _host: Any = None
    _peer: Any = None
    _secure: bool | None = None

    def dataReceived(self, data: bytes) -> None:
        if not (SUPPORTED and self._head_received(data)):
            super().dataReceived(data)

    def getHost(self) -> Any:
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def isSecure(self) -> bool:
        if self._secure is None:
            self._secure = ISSLTransport(self.transport, None) is not None
        return self._secure

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """HTTPChannel.writeHeaders, as one ``write`` of one string."""
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        lines = [b"%s %s %s\r\n" % (version, code, reason)]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        transport: Any = self.transport
        transport.write(b"".join(lines))

    def _head_received(self, data: bytes) -> bool:
        """Take a request whose head is whole at the start of ``data``, as
        ``HTTPChannel.dataReceived`` would; ``False`` if it is not for this path."""
        if not self._at_request_start():
            return False
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = parse_head(data[:end], self.totalHeadersSize, self.maxHeaders)
        if head is None:
            return False
        self.resetTimeout()
        channel: Any = self
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
            LineReceiver.dataReceived(self, rest)
        return True

    def _at_request_start(self) -> bool:
        """The line parser waits for a request line, with nothing buffered."""
        channel: Any = self
        transport: Any = self.transport
        return bool(channel.line_mode and not channel._buffer and not channel._busyReceiving
                    and not channel.paused and self.persistent
                    and channel._HTTPChannel__first_line
                    and not channel._HTTPChannel__header
                    and transport is not None and not transport.disconnecting
                    and self.MAX_LENGTH >= self.totalHeadersSize)

    def _start_request(self, head: Head) -> bool:
        """HTTPChannel.lineReceived for the request line; ``False`` if that disconnected."""
        channel: Any = self
        factory = self.requestFactory
        if _non_queued(factory):
            request = factory(self)
        else:
            request = factory(self, len(self.requests))
        self.requests.append(request)
        self._receivedHeaderSize = len(head.method) + len(head.target) + len(head.version) + 2
        channel._HTTPChannel__first_line = 0
        channel._command = head.method
        channel._path = head.target
        channel._version = head.version
        return not self._disconnecting()

    def _disconnecting(self) -> bool:
        """What makes LineReceiver stop after a line."""
        transport: Any = self.transport
        return bool(transport and transport.disconnecting)

    def _headers_received(self, head: Head) -> None:
        """HTTPChannel.headerReceived for every header, then the end of the head."""
        channel: Any = self
        if head.framing is not None:
            self._maybeChooseTransferDecoder(*head.framing)
        raw = self.requests[-1].requestHeaders._rawHeaders
        for name, value in head.headers:
            values = raw.get(name)
            if values is None:
                raw[name] = [value]
            else:
                values.append(value)
        self._receivedHeaderCount = len(head.headers)
        self._receivedHeaderSize = head.size
        channel._HTTPChannel__header = b""
        self.allHeadersReceived()
        if self.length == 0:
            self.allContentReceived()
        else:
            self.setRawMode()


_date_second = -1
_date = b""


def http_date() -> bytes:
    """``datetimeToString()``, formatted once a second."""
    global _date_second, _date
    now = time.time()
    second = int(now)
    if second != _date_second:
        _date = datetimeToString(second)
        _date_second = second
    return _date


class FastRequestMixin:
    """Mix into a ``twisted.web.server.Request`` subclass (first in the bases): its
    ``process`` with the ``Date`` header formatted once a second.

    ``process`` is Twisted's (26.x) own, line for line but for those two headers;
    ``tests/test_fastchannel.py`` compares the answers of both on the paths it has.
    """

    channel: Any
    path: bytes
    site: Any
    prepath: Any
    postpath: Any
    responseHeaders: Any
    _encoder: Any

    def process(self) -> None:
        # twisted.web.server.Request.process, but for the Date header.
        if not SUPPORTED:
            super().process()  # type: ignore[misc]
            return
        request: Any = self
        self.site = self.channel.site
        # setHeader, without canonicalising and sanitising names and values that need not.
        headers = self.responseHeaders._rawHeaders
        headers[b"Server"] = [_server_version]
        headers[b"Date"] = [http_date()]
        self.prepath = []
        # unquote returns a segment without "%" as it is: skip the call for those.
        self.postpath = [unquote(segment) if b"%" in segment else segment
                         for segment in self.path[1:].split(b"/")]
        if self.path == b"*":
            request._handleStar()
            return
        try:
            found = self.site.getResourceFor(self)
            if resource._IEncodingResource.providedBy(found):
                encoder = found.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            request.render(found)
        except BaseException:
            request.processingFailed(failure.Failure())
