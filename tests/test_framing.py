"""``web/framing.py``: request boundaries and head checks on raw bytes, as they arrive."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamaswap.web.framing import RequestFramer, Stop

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n")


def feed_all(framer: RequestFramer, pieces: list[bytes]) -> tuple[bytes, Stop | None]:
    passed = []
    for piece in pieces:
        out, stop = framer.feed(piece)
        passed.append(out)
        if stop is not None:
            return b"".join(passed), stop
    return b"".join(passed), None


def bytewise(data: bytes) -> list[bytes]:
    return [bytes([b]) for b in data]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_pipelined_requests_pass_unchanged_and_are_counted(split: bool) -> None:
    stream = GET + POST + CHUNKED + b"\r\n" + GET  # one empty line before a request is fine
    framer = RequestFramer()
    passed, stop = feed_all(framer, bytewise(stream) if split else [stream])
    assert stop is None and passed == stream
    assert framer.started == 4 and list(framer.targets) == [b"/a", b"/b", b"/c", b"/a"]


def test_an_unfinished_head_is_held_until_it_is_complete() -> None:
    framer = RequestFramer()
    assert framer.feed(GET[:10]) == (b"", None)
    assert framer.feed(GET[10:]) == (GET, None)


def test_body_bytes_that_look_like_a_bad_head_are_body() -> None:
    body = b"GET / HTTP/1.1\nHost: a\nHost: b\n\n"
    request = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    assert RequestFramer().feed(request + GET) == (request + GET, None)


@pytest.mark.parametrize(("head", "status", "words"), [
    (b"GET / HTTP/1.1\nHost: x\n\n", 400, "CRLF"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host"),
    (b"GET / HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n", 400, "folding"),
    (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
     "malformed"),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/2.0\r\n\r\n", 400, "malformed"),
    (b"GET  / HTTP/1.1\r\n\r\n", 400, "malformed"),
    (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 400, "malformed"),  # only one empty line is skipped
    (b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n", 414, "request line"),
    (b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 501 + b"\r\n", 431, "500 header fields"),
])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_bad_heads_stop_before_their_first_byte(head: bytes, status: int, words: str,
                                                split: bool) -> None:
    stream = GET + head
    passed, stop = feed_all(RequestFramer(), bytewise(stream) if split else [stream])
    # The request before it goes on (and the one empty line twisted.web skips); nothing of
    # the bad one does.
    assert passed in (GET, GET + b"\r\n")
    assert stop is not None and stop.index == 1 and stop.refusal.status == status
    assert words.lower() in stop.refusal.message.lower()


@pytest.mark.parametrize(("body", "words"), [
    (b"FFFFFFFFFFFFFFFFFFFF\r\n", "chunk size"),
    (b"zz\r\n", "malformed chunk"),
    (b"5\r\nhelloXY", "malformed chunk"),  # no CRLF after the data
    (b"5\nhello", "CRLF"),
    (b"0\r\nTrailer: a\nb", "CRLF"),
    (b"1" * 1100, "longer than"),
])
def test_bad_chunks_stop_where_they_start(body: bytes, words: str) -> None:
    head = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    framer = RequestFramer()
    passed, stop = framer.feed(head + body)
    assert stop is not None and stop.index == 0 and stop.target == b"/c"
    assert words.lower() in stop.refusal.message.lower()
    assert passed.startswith(head) and len(passed) < len(head + body)


def test_a_chunk_being_read_is_announced() -> None:
    framer = RequestFramer()
    framer.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFF\r\nabc")
    assert framer.announced == 0xFFFF - 3
    framer.feed(b"x" * (0xFFFF - 3) + b"\r\n")
    assert framer.announced is None


def test_an_absolute_form_head_is_rewritten_to_its_path_and_host() -> None:
    head = b"GET http://m.example:8080/health?x=1 HTTP/1.1\r\nHost: other\r\nA: b\r\n\r\n"
    framer = RequestFramer()
    passed, stop = framer.feed(head + GET)
    assert stop is None
    assert passed == (b"GET /health?x=1 HTTP/1.1\r\nA: b\r\nHost: m.example:8080\r\n\r\n" + GET)
    assert list(framer.targets) == [b"/health?x=1", b"/a"]


def test_a_held_head_is_released_to_be_fed_again() -> None:
    framer = RequestFramer()
    assert framer.feed(GET + GET[:7]) == (GET, None)
    held = framer.release_head()
    assert held == GET[:7]
    assert framer.feed(held + GET[7:]) == (GET, None)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from([GET, POST, CHUNKED]), min_size=1, max_size=4),
       st.lists(st.integers(1, 400), max_size=6))
def test_any_cut_of_valid_requests_passes_them_all(requests: list[bytes],
                                                   cuts: list[int]) -> None:
    stream = b"".join(requests)
    bounds = sorted({0, len(stream), *(c % len(stream) for c in cuts)})
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    framer = RequestFramer()
    passed, stop = feed_all(framer, pieces)
    assert stop is None and passed == stream and framer.started == len(requests)
