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

The checks run on the raw bytes before twisted.web's parser sees them
(``web/framing.py``): ``dataReceived`` holds each head until it is complete and checked,
then hands it on, and follows the bodies' framing so that pipelined requests are read too.
A request refused behind others still being answered is answered after them, in order.
Only public ``HTTPChannel`` API is used: twisted.web never sees a head or chunk that its
own refusal path would answer with a bare ``400``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from llamaswap.logs import get_logger
from llamaswap.web.errors import error_response
from llamaswap.web.framing import RequestFramer, Stop
from llamaswap.web.headcheck import Refusal
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
    _framer: RequestFramer | None = None
    _stop: Stop | None = None  # a refusal waiting for the requests before it
    _done_count = 0  # requests of this connection answered
    _replaying = False

    # HTTPChannel's public state, as seen from here
    transport: Any
    requests: list[Any]
    persistent: Any
    totalHeadersSize: int
    maxHeaders: int
    MAX_LENGTH: int
    resetTimeout: Any  # TimeoutMixin's

    def connectionMade(self) -> None:
        self._framer = RequestFramer(max_line=self.MAX_LENGTH, max_head=self.totalHeadersSize,
                                     max_headers=self.maxHeaders)
        super().connectionMade()  # type: ignore[misc]

    # -- what arrives ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._replaying:  # twisted.web's own replay of bytes checked when they came
            super().dataReceived(data)  # type: ignore[misc]
            return
        if self._refused:
            self._linger_on()  # read and dropped (see the module docstring)
            return
        framer = self._framer
        if framer is None or self._stop is not None:
            return  # not connected yet, or a refusal waits its turn: nothing more is read
        passed, stop = framer.feed(data)
        self._stop = stop
        if passed:
            super().dataReceived(passed)  # type: ignore[misc]
        else:
            self.resetTimeout()
        if stop is not None:
            self._refuse_in_turn()
            return
        remaining = framer.announced
        if remaining is not None and self._done_count + len(self.requests) == framer.started:
            expect_more = getattr(self.requests[-1], "expect_more", None)
            if expect_more is not None:
                expect_more(remaining)  # the body limit (web/limits.py)

    def requestDone(self, request: Any) -> None:
        self._done_count += 1
        if self._framer is not None and self._framer.targets:
            self._framer.targets.popleft()
        replaying, self._replaying = self._replaying, True
        try:
            super().requestDone(request)  # type: ignore[misc]
        finally:
            self._replaying = replaying
        self._refuse_in_turn()
        framer = self._framer
        if (framer is not None and framer.started == self._done_count and self.persistent
                and not self._refused and self._stop is None):
            # The next request's head has begun but is held here, not in twisted.web's
            # buffer: it arrives now, as twisted.web's replay would have it.
            held = framer.release_head()
            if held:
                self.dataReceived(held)

    def _refuse_in_turn(self) -> None:
        """Answer a waiting refusal once every request before it has its answer."""
        stop = self._stop
        if stop is not None and stop.index == self._done_count and not self._refused:
            self.refuse(stop.refusal, stop.target)

    def target_of(self, request: Any) -> bytes:
        """The request target ``request`` was received with (before twisted.web sets
        ``request.uri``, e.g. for an early 413)."""
        framer = self._framer
        try:
            return framer.targets[self.requests.index(request)] if framer else b"/"
        except (ValueError, IndexError):
            return b"/"

    def allContentReceived(self) -> None:
        if self._refused:
            return  # e.g. the rest of a body after an early 413
        super().allContentReceived()  # type: ignore[misc]

    # -- refusing --------------------------------------------------------------------------

    def refuse(self, refusal: Refusal, target: bytes = b"/") -> None:
        """Answer the request being received (sent to ``target``) with ``refusal``, then
        close."""
        if self._refused or self.transport is None or self.transport.disconnecting:
            return
        path = target.partition(b"?")[0].decode("latin-1")
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
