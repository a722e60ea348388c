"""Ending a request on an operator's word: the handler is cancelled and the client told in
the clearest way its response still allows (``web/cancel.py``)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.components import Componentized
from twisted.web.http_headers import Headers

from llamaswap.context import context_of
from llamaswap.web.cancel import end_cancelled


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class FakeRequest(Componentized):
    """What ``end_cancelled`` uses of a request (``Componentized``: it has a context)."""

    def __init__(self, started: bool, content_type: bytes = b"") -> None:
        super().__init__()
        self.finished = False
        self.startedWriting = started
        self.responseHeaders = Headers({b"content-type": [content_type]} if content_type else {})
        self.requestHeaders = Headers()
        self.producer: Any = object() if started else None
        self.code = 200
        self.written: list[bytes] = []
        self.transport = FakeTransport()
        self.handler: Deferred[None] = Deferred()
        self.handler.addErrback(lambda f: f.trap(CancelledError))
        context_of(self).handler = self.handler

    def unregisterProducer(self) -> None:
        self.producer = None

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: str, value: str) -> None:
        self.responseHeaders.setRawHeaders(name, [value])

    def getHeader(self, name: bytes) -> None:
        return None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True


def test_nothing_sent_yet_gets_a_503() -> None:
    request = FakeRequest(started=False)
    end_cancelled(request)  # type: ignore[arg-type]
    assert request.handler.called and request.code == 503 and request.finished
    assert json.loads(b"".join(request.written))["error"]["code"] == "request_cancelled"


def test_an_event_stream_gets_an_error_event_and_a_clean_end() -> None:
    request = FakeRequest(started=True, content_type=b"text/event-stream; charset=utf-8")
    end_cancelled(request)  # type: ignore[arg-type]
    assert request.producer is None and request.finished and not request.transport.aborted
    assert request.written[-1].startswith(b"event: error\ndata: ")


def test_another_body_under_way_is_cut_not_ended() -> None:
    request = FakeRequest(started=True, content_type=b"application/json")
    end_cancelled(request)  # type: ignore[arg-type]
    assert request.transport.aborted and not request.finished and request.written == []


def test_a_request_already_over_is_left_alone() -> None:
    request = FakeRequest(started=True, content_type=b"text/event-stream")
    request.finished = True
    end_cancelled(request)  # type: ignore[arg-type]
    assert request.handler.called and request.written == [] and not request.transport.aborted
