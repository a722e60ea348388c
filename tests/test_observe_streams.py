"""A log or event stream follower drops for a slow client instead of buffering or blocking."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from llamaswap.logs import LogStream
from llamaswap.web.observe import _Follower


class FakeRequest:
    """What _Follower uses of a twisted.web Request."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished = False
        self._finish: Deferred[None] = Deferred()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True

    def notifyFinish(self) -> Deferred[None]:
        return self._finish


def follow(stream: LogStream) -> tuple[FakeRequest, _Follower]:
    request = FakeRequest()
    follower = _Follower(request,  # type: ignore[arg-type]
                         lambda n: follower.send(f"\n— {n} bytes dropped —\n".encode()))
    follower.on_close(stream.subscribe(lambda line: follower.send((line + "\n").encode())))
    return request, follower


def test_a_paused_reader_loses_lines_and_is_told_how_many_bytes() -> None:
    stream = LogStream()
    request, follower = follow(stream)
    fast_request, _ = follow(stream)
    assert request.producer is follower
    stream.append("one")
    request.producer.pauseProducing()  # the client's socket is full
    for i in range(1000):
        stream.append(f"line {i:04d}")  # the model's pipe is read on, nothing waits
    assert request.written == [b"one\n"]
    request.producer.resumeProducing()
    stream.append("after")
    assert request.written == [b"one\n", "\n— 10000 bytes dropped —\n".encode(), b"after\n"]
    assert len(fast_request.written) == 1002  # other readers lose nothing


def test_a_reader_that_leaves_is_unsubscribed() -> None:
    stream = LogStream()
    request, _ = follow(stream)
    request._finish.errback(Exception("connection lost"))
    stream.append("nobody listens")
    assert request.written == []
    assert stream._subscribers == []


def test_closing_from_our_side_finishes_the_response() -> None:
    stream = LogStream()
    request, follower = follow(stream)
    follower.close()
    assert request.finished and request.producer is None
    stream.append("late")
    assert request.written == []
