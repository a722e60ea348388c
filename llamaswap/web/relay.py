"""Relays an upstream response body to the client, chunk by chunk, with flow control.

The upstream body transport is registered as the client request's streaming producer, so a
slow client pauses the upstream socket instead of making the proxy buffer; a client that
leaves stops the upstream at once; an upstream that fails mid-body aborts the client
connection instead of pretending the body was complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.server import Request

from llamaswap.web.errors import abort_connection


class UpstreamBroke(Exception):
    """The upstream connection ended before the response body was complete."""


class Relay(Protocol):
    """Handed to ``response.deliverBody``; ``done`` fires when the relay is over.

    ``done`` fires with the number of body bytes relayed, or fails with ``UpstreamBroke``.
    Cancelling ``done`` (the client left) stops the upstream body.
    """

    def __init__(self, request: Request,
                 on_chunk: Callable[[bytes], None] | None = None) -> None:
        self._request = request
        self._on_chunk = on_chunk
        """Sees each chunk after it was written to the client (token metering)."""
        self.bytes_relayed = 0
        self._client_gone = False
        self.done: Deferred[int] = Deferred(lambda _: self.client_gone())

    def connectionMade(self) -> None:
        self._request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        if not self._client_gone:
            self.bytes_relayed += len(data)
            self._request.write(data)
            if self._on_chunk is not None:
                self._on_chunk(data)

    def client_gone(self) -> None:
        """The client disconnected: stop reading the upstream, which closes it."""
        if self._client_gone:
            return
        self._client_gone = True
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._client_gone:
            return  # ``done`` was cancelled; its errback path reports
        self._request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            self._request.finish()
            self.done.callback(self.bytes_relayed)
        else:
            abort_connection(self._request)
            self.done.errback(Failure(UpstreamBroke(
                f"upstream connection broke after {self.bytes_relayed} bytes: "
                f"{reason.getErrorMessage()}")))
