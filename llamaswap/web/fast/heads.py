# -*- test-case-name: tests.test_strict -*-
"""Request-head checks inside twisted.web's own parser, instead of on the raw bytes first.

``web/strict.py`` checks every head on the raw bytes (``web/framing.py``) before
twisted.web's parser reads them again: public API only, at the cost of parsing each head
twice (``docs/performance.md`` has the figures). This piece makes the same checks from
inside the parser, as each line is read, so a head is parsed once: it overrides
``HTTPChannel._respondToBadRequestAndDisconnect`` (where twisted.web sends every head it
refuses), reads and writes ``_path`` and ``_command``, reads ``_transferDecoder`` (the
chunk size being read), ``_receivedHeaderSize``/``_receivedHeaderCount`` and
``LineReceiver._buffer``/``_busyReceiving`` (what is not parsed yet), and clears ``_buffer``
once a connection is refused.

The answers are the public path's, with one difference: a head with obsolete line folding
is joined by twisted.web here, refused with 400 there. The gate (``WORKS``) feeds canned
heads (good, pipelined, absolute-form, each kind of refusal, whole and byte by byte)
through a channel with this piece and through one with the public checks, and requires the
same answers (statuses, error codes, bodies served; an error's wording may differ).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from llamaswap.web.fast.gate import gate
from llamaswap.web.headcheck import (
    MALFORMED,
    Refusal,
    bare_line_ending,
    chunk_size_refusal,
    oversized_head,
    review_head,
    too_many_headers,
)
from llamaswap.web.strict import StrictChannelMixin


class ParserHeadChecks:
    """Mix in before a ``StrictChannelMixin`` channel (``with_parser_checks``): its checks
    then run inside twisted.web's parser and the raw-byte framer is not used."""

    framing = False  # StrictChannelMixin: no raw-byte framer
    _refused: bool
    requests: list[Any]
    line_mode: int
    totalHeadersSize: int
    maxHeaders: int
    refuse: Any

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)  # type: ignore[misc]
        channel: Any = self
        if (channel._buffer and self.line_mode and not self._refused
                and not channel._busyReceiving and not channel.paused
                and bare_line_ending(channel._buffer)):
            self.refuse(Refusal(400, "request lines must end with CRLF"), self._target())

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        channel: Any = self
        if channel._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(oversized_head(not self.requests, self.totalHeadersSize),
                        self._target())
            return
        super().lineReceived(line)  # type: ignore[misc]

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(oversized_head(not self.requests, self.totalHeadersSize), self._target())

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        super().rawDataReceived(data)  # type: ignore[misc]
        decoder: Any = getattr(self, "_transferDecoder", None)
        if decoder is not None and not self._refused and getattr(decoder, "state", "") == "BODY":
            refusal = chunk_size_refusal(decoder.length)
            if refusal is not None:
                self.refuse(refusal, self._target())
                return
            expect_more = getattr(self.requests[-1], "expect_more", None)
            if expect_more is not None:
                expect_more(decoder.length)  # the body limit (web/limits.py)

    def allHeadersReceived(self) -> None:
        channel: Any = self
        request = self.requests[-1]
        verdict = review_head(channel._command, channel._path,
                              request.requestHeaders.getRawHeaders(b"host", []))
        if isinstance(verdict, Refusal):
            self.refuse(verdict, self._target())
            return
        if verdict is not None:  # absolute-form: its path, its host
            channel._path = verdict.path
            request.requestHeaders.setRawHeaders(b"host", [verdict.host])
        super().allHeadersReceived()  # type: ignore[misc]

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Where twisted.web sends every head it refuses (and a broken chunk)."""
        channel: Any = self
        if channel._receivedHeaderCount > self.maxHeaders:
            self.refuse(too_many_headers(self.maxHeaders), self._target())
        else:
            self.refuse(MALFORMED, self._target())

    def close_after_answer(self) -> None:
        super().close_after_answer()  # type: ignore[misc]
        channel: Any = self
        channel._buffer = b""  # LineReceiver stops parsing what it holds

    def target_of(self, request: Any) -> bytes:
        return self._target()

    def _target(self) -> bytes:
        """The target of the request being read, as far as it is known."""
        target = getattr(self, "_path", b"/")
        return target if target[:1] == b"/" else b"/"


def with_parser_checks(channel_class: type) -> type:
    """``channel_class`` (a ``StrictChannelMixin`` channel) with this piece's checks."""
    return type(f"Parser{channel_class.__name__}", (ParserHeadChecks, channel_class), {})


# -- the gate ------------------------------------------------------------------------------------


class _Page(Resource):
    isLeaf = True
    max_request_size = 1000  # read by web/limits.py, if a request class applies it

    def render(self, request: Request) -> bytes:
        host = request.requestHeaders.getRawHeaders(b"host", [b""])[0]
        return b"%s %s %s" % (request.method, request.uri, host)


class _PublicChannel(StrictChannelMixin, HTTPChannel):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()


_CANNED = (
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    b"GET http://h.example:8/d?e=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"b" * 17000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 501 + b"\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET /f HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST /g HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
    b"POST /h HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
)


def _answers(channel_class: type, data: bytes, bytewise: bool) -> bytes:
    site = Site(_Page())
    site.protocol = channel_class  # type: ignore[method-assign]
    channel: Any = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    for piece in ([bytes([b]) for b in data] if bytewise else [data]):
        channel.dataReceived(piece)
    channel.connectionLost(Exception("gate done"))
    # The same answers; an error's wording and so its length may differ.
    lines = [line for line in transport.value().split(b"\r\n")
             if not line.startswith((b"Date: ", b"Content-Length: "))]
    return re.sub(rb'"message": "[^"]*"', b"", b"\r\n".join(lines))


@gate("heads")
def _works() -> bool:
    parser_class = with_parser_checks(_PublicChannel)
    for data in _CANNED:
        for bytewise in (False, True):
            public = _answers(_PublicChannel, data, bytewise)
            if not public.startswith(b"HTTP/1.1 ") or _answers(parser_class, data,
                                                                 bytewise) != public:
                return False
    return True


WORKS = _works()
"""The parser-side checks answer as the public ones on this Twisted (checked at import)."""
