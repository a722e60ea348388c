"""When a request that got no answer may be sent again (``llamaswap.web.unanswered``)."""

from __future__ import annotations

import builtins
import io

from twisted.internet import error as twisted_errors
from twisted.web.client import FileBodyProducer

from llamaswap.web.unanswered import (
    MAX_REPLAYS_REFUSED,
    MAX_REPLAYS_SENT,
    Unanswered,
    may_replay,
    unanswered,
)


def test_refused_connections_count_as_unanswered_wherever_they_are_in_the_chain() -> None:
    for refused in (twisted_errors.ConnectionRefusedError("no"),
                    builtins.ConnectionRefusedError("no")):
        wrapper = RuntimeError("could not send")
        wrapper.__cause__ = refused
        found = unanswered(wrapper)
        assert found is not None and not found.sent
    assert unanswered(RuntimeError("something else")) is None
    assert unanswered(twisted_errors.TimeoutError("slow")) is None
    own = Unanswered("closed", sent=True)
    assert unanswered(own) is own


def test_replays_are_bounded_and_fewer_once_the_request_went_out() -> None:
    refused, closed = Unanswered("refused", sent=False), Unanswered("closed", sent=True)
    assert [may_replay(refused, b"{}", n) for n in range(MAX_REPLAYS_REFUSED + 1)] == \
        [True] * MAX_REPLAYS_REFUSED + [False]
    assert [may_replay(closed, None, n) for n in range(MAX_REPLAYS_SENT + 1)] == \
        [True] * MAX_REPLAYS_SENT + [False]
    assert MAX_REPLAYS_SENT < MAX_REPLAYS_REFUSED


def test_a_streamed_body_is_replayed_only_if_none_of_it_was_sent() -> None:
    producer = FileBodyProducer(io.BytesIO(b"x" * 10))  # a large body, from its spool file
    assert may_replay(Unanswered("refused", sent=False), producer, 0)
    assert not may_replay(Unanswered("closed", sent=True), producer, 0)
