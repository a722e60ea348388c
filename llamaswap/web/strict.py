# -*- test-case-name: tests.test_strict -*-
"""A channel that answers every malformed request head, at once, and then closes cleanly.

twisted.web's ``HTTPChannel`` closes an overlong line without a word, answers its other
refusals with a bare ``400`` (no body, no ``Connection: close``), waits for a CRLF that a
client ending lines with a bare LF never sends, and takes a chunk size of any length. With
``StrictChannelMixin`` each of these gets an answer in llamaswap's error envelope, as soon
as the head (or chunk size) shows it:

- a request line over the head limit: 414; header fields over it, or too many: 431;
- a bare LF or CR in a head, a chunk size over 2**63, anything twisted.web refuses: 400;
- two ``Host`` headers, an invalid one, or an unusable target: 400; an absolute-form target
  (``GET http://host/path``) is served as its path (``web/headcheck.py``).

A refused connection is not simply closed: closing a socket with unread bytes resets it,
and the client may lose the answer. The answer is written, the write side shut (the client
sees the end at once), what the client still sends is read and dropped, and the
connection is closed when the client closes it, after ``linger_idle`` seconds without a
byte from it, or ``linger_max`` seconds after the answer (an upload still under way when
its 413 came is read to its end, if it ends soon, so that a client that reads only after
sending still gets its answer). An early 413 (``web/limits.py``) closes the same way,
through ``close_after_answer``.

Checks sit where every head passes (``allHeadersReceived``, the line parser's callbacks,
``dataReceived``). This overrides ``HTTPChannel._respondToBadRequestAndDisconnect``
(private: the one place twisted.web's refusals go) and reads ``_path``, ``_command``,
``_transferDecoder`` and ``LineReceiver._buffer``: private names outside ``web/fast``, kept
because the public ``HTTPChannel`` offers no hook for these answers; the tests in
``tests/test_strict.py`` fail first if a Twisted release moves them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from llamaswap.logs import get_logger
from llamaswap.web.errors import error_response
from llamaswap.web.headcheck import (
    MALFORMED,
    Refusal,
    bare_line_ending,
    chunk_size_refusal,
    oversized_head,
    review_head,
    too_many_headers,
)
from llamaswap.web.routes import api_of_path

LINGER_IDLE = 2.0
"""A refused connection is closed after this many seconds without a byte from the client."""
LINGER_MAX = 30.0
"""... and this many seconds after its answer at the latest."""

log = get_logger("llamaswap.web.strict")


class StrictChannelMixin:
    """Mix into an ``HTTPChannel`` subclass, before it in the bases (module docstring).

    The subclass sets ``clock`` (an ``IReactorTime``) before the connection is made.
    """

    clock: IReactorTime
    linger_idle = LINGER_IDLE
    linger_max = LINGER_MAX
    _refused = False
    _linger_call: IDelayedCall | None = None
    _linger_end = 0.0

    # HTTPChannel's, as seen from here
    transport: Any
    requests: list[Any]
    persistent: Any
    line_mode: int
    totalHeadersSize: int
    maxHeaders: int
    _receivedHeaderSize: int
    _receivedHeaderCount: int

    # -- what arrives ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            self._linger_on()  # read and dropped (see the module docstring)
            return
        super().dataReceived(data)  # type: ignore[misc]
        channel: Any = self
        if (channel._buffer and self.line_mode and not self._refused
                and not channel._busyReceiving and not channel.paused
                and bare_line_ending(channel._buffer)):
            self.refuse(Refusal(400, "request lines must end with CRLF"))

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(oversized_head(not self.requests, self.totalHeadersSize))
            return
        super().lineReceived(line)  # type: ignore[misc]

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(oversized_head(not self.requests, self.totalHeadersSize))

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        super().rawDataReceived(data)  # type: ignore[misc]
        decoder: Any = getattr(self, "_transferDecoder", None)
        if decoder is not None and not self._refused and getattr(decoder, "state", "") == "BODY":
            self._chunk_announced(decoder.length)

    def _chunk_announced(self, remaining: int) -> None:
        refusal = chunk_size_refusal(remaining)
        if refusal is not None:
            self.refuse(refusal)
            return
        expect_more = getattr(self.requests[-1], "expect_more", None) if self.requests else None
        if expect_more is not None:
            expect_more(remaining)  # the body limit (web/limits.py)

    def allHeadersReceived(self) -> None:
        channel: Any = self
        request = self.requests[-1]
        verdict = review_head(channel._command, channel._path,
                              request.requestHeaders.getRawHeaders(b"host", []))
        if isinstance(verdict, Refusal):
            self.refuse(verdict)
            return
        if verdict is not None:  # absolute-form: its path, its host
            channel._path = verdict.path
            request.requestHeaders.setRawHeaders(b"host", [verdict.host])
        super().allHeadersReceived()  # type: ignore[misc]

    def allContentReceived(self) -> None:
        if self._refused:
            return  # e.g. the rest of a body after an early 413
        super().allContentReceived()  # type: ignore[misc]

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Where twisted.web sends every head it refuses (and a broken form body)."""
        if self._receivedHeaderCount > self.maxHeaders:
            self.refuse(too_many_headers(self.maxHeaders))
        else:
            self.refuse(MALFORMED)

    # -- refusing --------------------------------------------------------------------------

    def refuse(self, refusal: Refusal) -> None:
        """Answer the request being received with ``refusal``, then close."""
        if self._refused or self.transport is None or self.transport.disconnecting:
            return
        path = getattr(self, "_path", b"").partition(b"?")[0].decode("latin-1")
        peer = getattr(self.transport.getPeer(), "host", "-")
        log.info("refused a request from {client}: {status} {message}", client=peer,
                 status=refusal.status, message=refusal.message)
        self.transport.write(error_response(refusal.status, refusal.message,
                                            api=api_of_path(path)))
        self.close_after_answer()

    def close_after_answer(self) -> None:
        """The request being received has its answer: take no more requests, close the
        write side now and the connection when the client is done (or after the linger)."""
        if self._refused or self.transport is None or self.transport.disconnecting:
            return  # already closing (e.g. a 408)
        self._refused = True
        self.persistent = False
        channel: Any = self
        channel._buffer = b""  # LineReceiver stops parsing what it holds
        self._linger_end = self.clock.seconds() + self.linger_max
        self._linger_call = self.clock.callLater(self.linger_idle, self._linger_over)
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            channel.loseConnection()

    def _linger_on(self) -> None:
        """The client is still sending: wait for it a while longer (within the maximum)."""
        call = self._linger_call
        if call is not None and call.active():
            call.reset(max(0.0, min(self.linger_idle, self._linger_end - self.clock.seconds())))

    def _linger_over(self) -> None:
        self._linger_call = None
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None
        super().connectionLost(reason)  # type: ignore[misc]
