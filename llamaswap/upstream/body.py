"""Reading a whole (small) response body: an error answer, a health probe's reply."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from llamaswap.upstream.errors import UpstreamError

MAX_READ = 1024 * 1024
"""Bytes ``read_body`` keeps by default: what an error answer or a health reply needs."""


class _Collector(Protocol):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            transport: Any = self.transport
            self.transport = None
            if not self.done.called:
                self.done.errback(Failure(UpstreamError(
                    f"response body over {self._limit} bytes")))
            transport.stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.transport = None
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(reason)


def read_body(response: Any, limit: int = MAX_READ) -> Deferred[bytes]:
    """The whole body of ``response``; fails past ``limit`` bytes. Cancelling drops the
    connection."""
    collector = _Collector(limit)
    response.deliverBody(collector)
    return collector.done
