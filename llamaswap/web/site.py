# -*- test-case-name: tests.test_site -*-
"""A ``Site`` whose connections cannot be held open by clients that send slowly.

twisted.web's ``HTTPChannel`` has one timer, an idle timeout that every received byte resets,
so a client that trickles one header byte every few seconds (slowloris) keeps a connection,
and its file descriptor, forever. ``HardenedChannel`` adds two deadlines that bytes do not
reset:

- the request line and headers must be complete ``header_timeout`` seconds after the
  request's first byte arrived;
- the body must arrive at ``min_body_rate`` bytes per second on average, after a grace of
  ``body_timeout`` seconds (a deadline that each received byte pushes back by
  ``1 / min_body_rate`` seconds, never more).

A client that misses one gets ``408 Request Timeout`` and is disconnected (aborted
``abortTimeout`` seconds later if it does not read). Between requests the idle keep-alive
timeout (``idle_timeout``) applies; while a request is being answered none does, so long
generations are never cut. Header size and count stay bounded by ``HTTPChannel`` itself
(16 KiB, 500 headers: 414 or 431 beyond).

``StrictChannelMixin`` (``web/strict.py``) answers every malformed head at once and closes
refused connections cleanly.

The site applies the fast path it is given (``llamaswap.web.fast``: the config's ``fastPath``
and ``LLAMASWAP_FAST_PATH``) to its requests and sockets; without it, everything is
twisted.web's public behaviour. Form bodies are left unparsed by twisted.web
(``parsePOSTFormSubmission=False``): llamaswap reads forms itself (``web/modelrequest.py``,
``web/multipart.py``), and twisted.web's parse ran every POST's ``Content-Type`` through the
``email`` package and read a whole multipart upload into memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from io import BytesIO
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from llamaswap.logs import get_logger
from llamaswap.web.errors import error_response
from llamaswap.web.fast import FastPath
from llamaswap.web.strict import StrictChannelMixin

HEADER_TIMEOUT = 30.0
BODY_TIMEOUT = 30.0
MIN_BODY_RATE = 1024.0
IDLE_TIMEOUT = 60.0

log = get_logger("llamaswap.web.site")

# Bodies up to this size are kept in memory, larger ones spooled to a file (twisted.web's
# own choice for a request body).
_IN_MEMORY_BODY = 100_000


class HardenedChannel(StrictChannelMixin, HTTPChannel):
    """``HTTPChannel`` plus a header deadline and a minimum body rate (module docstring).

    The transport's addresses and TLS status cannot change during a connection, so they are
    asked for once (every ``Request`` asks for them; ``getHost`` is a system call).

    Timers cost a ``callLater`` and a ``cancel`` each, so neither is set per request when it
    need not be: a deadline is armed only when ``dataReceived`` returns with the request
    still incomplete (usually it came whole in one read), and the idle timeout is one call
    per connection that, when it fires early, sets itself again for the time left.
    """

    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT
    min_body_rate = MIN_BODY_RATE

    fast_path = FastPath.off()
    _host: Any = None
    _peer: Any = None
    _secure: bool | None = None

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__()
        self.clock = clock
        self._abort_call: IDelayedCall | None = None
        self._phase = "idle"  # idle -> headers -> body -> answering -> idle (keep-alive)
        self._deadline: IDelayedCall | None = None
        self._deadline_due = 0.0  # when _deadline is set to fire
        self._due = 0.0  # when the headers, or the body, must be in
        self._idle_call: IDelayedCall | None = None
        self._idle_due: float | None = None  # None: no idle timeout runs

    def connectionMade(self) -> None:
        self.fast_path.write_through(self.transport)
        super().connectionMade()

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

    _tunnel: Callable[[bytes], None] | None = None
    _tunnel_lost: Callable[[Failure], None] | None = None

    def start_tunnel(self, receive: Callable[[bytes], None],
                     lost: Callable[[Failure], None]) -> None:
        """An upgrade was answered 101 (``web/tunnel.py``): from now on every byte received
        goes to ``receive`` unparsed, no timeout applies, and what the request still writes
        (its end, once the tunnel closes) is dropped; ``lost`` hears of the connection's end."""
        self._tunnel, self._tunnel_lost = receive, lost
        self._phase = "tunnel"
        self._disarm()
        self.setTimeout(None)

    def write(self, data: bytes) -> None:
        if self._tunnel is None:
            super().write(data)

    def writeSequence(self, iovec: Any) -> None:
        if self._tunnel is None:
            super().writeSequence(iovec)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if self._tunnel is None:
            super().writeHeaders(version, code, reason, headers)

    def dataReceived(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel(data)
            return
        if self._phase == "idle" and data:
            self._phase = "headers"
            self._due = self._now() + self.header_timeout
        elif self._phase == "body" and data:
            self._due += len(data) / self.min_body_rate
        super().dataReceived(data)
        self._sync_deadline()

    def allHeadersReceived(self) -> None:
        self._phase = "body"
        self._due = self._now() + self.body_timeout
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._phase = "answering"
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        if self._tunnel is not None:
            self.requests.remove(request)  # the connection is the tunnel's now
            return
        # Set before the parent replays pipelined bytes through dataReceived.
        self._phase = "idle"
        self._disarm()
        super().requestDone(request)

    def close_after_answer(self) -> None:
        # A refused head or an early 413: no deadline or idle timeout applies any more,
        # only the linger (web/strict.py).
        self._phase = "closed"
        self._disarm()
        self.setTimeout(None)
        super().close_after_answer()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._tunnel_lost is not None:
            lost, self._tunnel_lost = self._tunnel_lost, None
            lost(reason)  # ends the tunnel's request before twisted.web calls it lost
        self._phase = "closed"
        self._disarm()
        super().connectionLost(reason)
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    # -- the idle timeout: TimeoutMixin's API, one DelayedCall per connection -------------

    def setTimeout(self, period: float | None) -> float | None:
        previous = self.timeOut
        self.timeOut = period  # type: ignore[assignment]  # TimeoutMixin says int: any number
        if period is None:
            self._idle_due = None  # a pending call finds nothing to do
            return previous
        now = self._now()
        self._idle_due = now + period
        self._idle_wake(now)
        return previous

    def resetTimeout(self) -> None:
        if self._idle_due is not None and self.timeOut is not None:
            now = self._now()
            self._idle_due = now + self.timeOut
            self._idle_wake(now)

    def _idle_wake(self, now: float) -> None:
        """Have the idle call fire no later than ``_idle_due``."""
        due: Any = self._idle_due
        call = self._idle_call
        if call is None:
            self._idle_call = self.clock.callLater(max(0.0, due - now), self._idle_fired)
        elif call.getTime() > due:
            call.reset(max(0.0, due - now))

    def _idle_fired(self) -> None:
        self._idle_call = None
        if self._idle_due is None:
            return
        now = self._now()
        if now < self._idle_due:
            self._idle_wake(now)  # data came meanwhile: wait for the rest
            return
        self._idle_due = None
        self.timeoutConnection()

    # -- the header and body deadlines ------------------------------------------------------

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _sync_deadline(self) -> None:
        """Arm the deadline of a request that is still being received."""
        if self._phase != "headers" and self._phase != "body":
            return
        due = self._due
        if self._deadline is not None:
            if due == self._deadline_due:
                return
            self._deadline.reset(max(0.0, due - self._now()))
        else:
            self._deadline = self.clock.callLater(max(0.0, due - self._now()), self._missed)
        self._deadline_due = due

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _missed(self) -> None:
        self._deadline = None
        transport: Any = self.transport
        if transport is None or self._phase not in ("headers", "body"):
            return
        what = "request headers" if self._phase == "headers" else "request body"
        peer = getattr(transport.getPeer(), "host", "-")
        if self._answered():
            log.info("client {client} stopped sending its {what} after its answer: "
                     "disconnected", client=peer, what=what)
        else:
            log.warn("client {client} too slow sending its {what}: disconnected (408)",
                     client=peer, what=what)
            transport.write(error_response(408, f"the {what} did not arrive in time"))
        self._phase = "closed"
        if self.abortTimeout is not None:
            self._abort_call = self.clock.callLater(self.abortTimeout,
                                                    self.forceAbortClient)
        self.loseConnection()

    def _answered(self) -> bool:
        """Whether the request being received already has its answer, e.g. a 413 sent
        before its body (``web/limits.py``): then no 408 may follow it."""
        request = self.requests[-1] if self.requests else None
        return request is not None and bool(
            request.startedWriting or getattr(request, "_llamaswap_rejected", False))


class HardenedSite(Site):
    """A ``Site`` building ``HardenedChannel`` connections (HTTP/1.1; no HTTP/2 upgrade).

    ``reactor`` (an ``IReactorTime``) drives every timer, so tests pass a ``Clock``.
    ``fast_path``: the fast-path pieces to use (``llamaswap.web.fast``); by default what
    ``LLAMASWAP_FAST_PATH`` says, all of them if it is unset.
    """

    def __init__(self, resource: Any, *, reactor: Any = None,
                 header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT,
                 min_body_rate: float = MIN_BODY_RATE,
                 idle_timeout: float | None = IDLE_TIMEOUT,
                 fast_path: FastPath | None = None) -> None:
        super().__init__(resource, timeout=idle_timeout, reactor=reactor,
                         parsePOSTFormSubmission=False)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate
        self.fast_path = FastPath.configure() if fast_path is None else fast_path

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.requestFactory = self.fast_path.request_class(self.requestFactory)
        return channel

    def protocol(self) -> HardenedChannel:  # type: ignore[override]
        channel = HardenedChannel(self.reactor)
        channel.fast_path = self.fast_path
        channel.header_timeout = self.header_timeout
        channel.body_timeout = self.body_timeout
        channel.min_body_rate = self.min_body_rate
        return channel

    def getContentFile(self, length: int | None) -> IO[bytes]:
        """Where a request body goes: in memory if small and of known length, else a
        temporary file (twisted.web's own choice, which ``Request.gotLength`` otherwise
        makes after catching an ``AttributeError`` for this missing method every request)."""
        if length is not None and length < _IN_MEMORY_BODY:
            return BytesIO()
        return tempfile.TemporaryFile()
