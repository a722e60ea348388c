# -*- test-case-name: tests.test_fast_writes -*-
"""Socket writes sent once per reactor turn, without registering the socket with epoll.

Twisted's ``FileDescriptor.write`` buffers, registers the socket for writability
(``epoll_ctl``), sends on the next loop turn and unregisters it (``epoll_ctl``) again: for a
proxy relaying thousands of small token chunks a second, two extra system calls per write.
Sending at once instead (asyncio's way) costs a ``send`` per write: a response's headers, body
and end, or a request's headers and body, become separate packets.

Here a write goes into Twisted's own buffer as usual, but instead of registering the socket,
the connection is flushed with one ``send`` at the end of the current reactor turn (one
``callLater(0)`` for all connections written in that turn). Whatever the kernel does not take
goes back to Twisted's buffering, so flow control, producers, ``loseConnection`` and error
reporting stay Twisted's own. Nagle's algorithm is turned off, as nginx does (``tcp_nodelay``):
a token chunk must not wait for the previous one's acknowledgement.

Private state used: ``FileDescriptor``'s ``_tempDataBuffer``, ``_tempDataLen``,
``dataBuffer``/``offset``, ``_writeDisconnected``, ``_maybePauseProducer``,
``tcp.Connection._aborting``, and the connection's class (swapped for a subclass). The gate
(``WORKS``) writes through a real socket pair with a recording reactor and requires one
flush for the turn, no writer registration, and the bytes, in order, on the other end.
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from llamaswap.web.fast.gate import gate


class _TurnFlusher:
    """Sends every connection written during a reactor turn, at the end of that turn."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = weakref.ref(reactor)  # weak: the flusher goes when its reactor does
        self._dirty: list[Any] = []
        self._scheduled = False

    def add(self, connection: Any) -> None:
        self._dirty.append(connection)
        reactor = self._reactor()
        if not self._scheduled and reactor is not None:
            self._scheduled = True
            reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection._flush_turn()


# One flusher per reactor, gone with its reactor.
_flushers: weakref.WeakKeyDictionary[Any, _TurnFlusher] = weakref.WeakKeyDictionary()
_classes: dict[type, type] = {}


def _flusher(reactor: Any) -> _TurnFlusher:
    flusher = _flushers.get(reactor)
    if flusher is None:
        flusher = _flushers[reactor] = _TurnFlusher(reactor)
    return flusher


class TurnWrites:
    """Mixed into a ``tcp.Connection`` subclass by ``write_through``."""

    _in_turn = False

    def _idle(self) -> bool:
        """Nothing is being sent by Twisted's own path, and nothing needs it to be."""
        conn: Any = self
        return (conn.connected and not conn.disconnecting and not conn._writeDisconnected
                and not conn._aborting
                and len(conn.dataBuffer) == conn.offset
                and (conn.producer is None or (conn.streamingProducer
                                               and not conn.producerPaused)))

    def write(self, data: bytes) -> None:
        conn: Any = self
        if not data or not isinstance(data, bytes) or not self._idle():
            super().write(data)  # type: ignore[misc]
            return
        conn._tempDataBuffer.append(data)
        conn._tempDataLen += len(data)
        conn._maybePauseProducer()
        if not self._in_turn:
            self._in_turn = True
            _flusher(conn.reactor).add(self)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        self.write(b"".join(iovec))

    def _flush_turn(self) -> None:
        conn: Any = self
        self._in_turn = False
        if not conn._tempDataLen or not self._idle():
            if conn._tempDataLen and conn.connected and not conn._aborting:
                conn.startWriting()  # e.g. a producer paused meanwhile: Twisted's path
            return
        data = b"".join(conn._tempDataBuffer)
        try:
            sent = conn.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            conn.startWriting()  # doWrite meets the error again and reports it the usual way
            return
        if sent == len(data):
            conn._tempDataBuffer = []
            conn._tempDataLen = 0
            return
        conn._tempDataBuffer = [data[sent:]]
        conn._tempDataLen = len(data) - sent
        conn.startWriting()


def write_through(transport: Any) -> bool:
    """Batch a plain TCP or UNIX transport's writes per turn; anything else is left alone."""
    cls = type(transport)
    if not issubclass(cls, tcp.Connection) or getattr(transport, "TLS", False):
        return False
    if not issubclass(cls, TurnWrites):
        transport.__class__ = _turn_writes_class(cls)
    try:
        transport.setTcpNoDelay(True)
    except (OSError, AttributeError):
        pass  # UNIX sockets have no Nagle
    return True


def _turn_writes_class(cls: type) -> type:
    fast = _classes.get(cls)
    if fast is None:
        fast = _classes[cls] = type(f"TurnWrites{cls.__name__}", (TurnWrites, cls), {})
    return fast


# -- the gate ---------------------------------------------------------------------------------


class _RecordingReactor:
    """Enough of a reactor for one connection: delayed calls and writers are recorded."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []
        self.writers: list[Any] = []

    def callLater(self, delay: float, f: Callable[[], object]) -> None:
        self.calls.append(f)

    def addWriter(self, writer: Any) -> None:
        self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:
        if writer in self.writers:
            self.writers.remove(writer)


@gate("writes")
def _works() -> bool:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.settimeout(1.0)
        reactor = _RecordingReactor()
        connection: Any = tcp.Connection(ours, Protocol(), reactor)  # type: ignore[arg-type]
        connection.connected = True
        connection.__class__ = _turn_writes_class(tcp.Connection)
        connection.write(b"one ")
        connection.writeSequence([b"two ", b"three"])
        if len(reactor.calls) != 1 or reactor.writers:
            return False  # one flush per turn, no writer registration
        reactor.calls.pop()()
        received = b""
        while len(received) < 13:
            chunk = theirs.recv(64)
            if not chunk:
                break
            received += chunk
        if received != b"one two three" or reactor.writers or connection._tempDataLen:
            return False
        connection.connected = False  # nothing of it outlives the check
    return True


WORKS = _works()
"""Writes once per turn behave on this Twisted (checked once, at import)."""
