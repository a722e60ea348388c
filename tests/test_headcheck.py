"""``web/headcheck.py``: what a request head may hold, as pure functions."""

from __future__ import annotations

import pytest

from llamaswap.web.headcheck import (
    MAX_CHUNK_SIZE,
    Refusal,
    Target,
    bare_line_ending,
    chunk_size_refusal,
    oversized_head,
    review_head,
)


@pytest.mark.parametrize("target", [b"/", b"/v1/models?x=1", b"/a%00b", b"//x"])
def test_origin_form_is_served_as_it_is(target: bytes) -> None:
    assert review_head(b"GET", target, [b"x"]) is None


@pytest.mark.parametrize(("target", "path", "host"), [
    (b"http://host/health", b"/health", b"host"),
    (b"HTTP://host:8080/v1/models?a=b", b"/v1/models?a=b", b"host:8080"),
    (b"https://[::1]:9/x", b"/x", b"[::1]:9"),
    (b"http://host", b"/", b"host"),
    (b"http://host?q=1", b"/?q=1", b"host"),
])
def test_absolute_form_is_read_as_its_path_with_its_host(
        target: bytes, path: bytes, host: bytes) -> None:
    # RFC 9112 §3.2.2: the target's authority replaces whatever Host says.
    assert review_head(b"GET", target, [b"other"]) == Target(path, host)
    assert review_head(b"GET", target, []) == Target(path, host)


@pytest.mark.parametrize(("target", "why"), [
    (b"http://user:pw@host/x", "user information"),
    (b"ftp://host/x", "http or https"),
    (b"http:///x", "not a valid host"),
    (b"http://ho st/x", "not a valid host"),
    (b"host:443", "starting with /"),
    (b"v1/models", "starting with /"),
])
def test_unusable_targets_are_400(target: bytes, why: str) -> None:
    verdict = review_head(b"GET", target, [b"x"])
    assert isinstance(verdict, Refusal) and verdict.status == 400
    assert why in verdict.message


def test_asterisk_is_for_options_only() -> None:
    assert review_head(b"OPTIONS", b"*", [b"x"]) is None
    verdict = review_head(b"GET", b"*", [b"x"])
    assert isinstance(verdict, Refusal) and verdict.status == 400


def test_two_host_headers_are_400_even_when_equal() -> None:
    assert review_head(b"GET", b"/", [b"a", b"a"]) == Refusal(400, "more than one Host header")
    # ... also with an absolute-form target, which would otherwise override Host
    assert isinstance(review_head(b"GET", b"http://a/", [b"a", b"b"]), Refusal)


@pytest.mark.parametrize("host", [b"a b", b"a/b", b"a@b", b"h:p0rt", b"\xff"])
def test_an_invalid_host_is_400(host: bytes) -> None:
    assert review_head(b"GET", b"/", [host]) == Refusal(
        400, "the Host header is not a valid host")


@pytest.mark.parametrize("host", [b"", b"localhost", b"127.0.0.1:8080", b"[::1]", b"a-b.c_d"])
def test_valid_hosts_pass(host: bytes) -> None:
    assert review_head(b"GET", b"/", [host]) is None


@pytest.mark.parametrize(("unparsed", "bare"), [
    (b"", False),
    (b"GET / HTTP/1.1", False),
    (b"GET / HTTP/1.1\r", False),  # its LF may be in the next read
    (b"GET / HTTP/1.1\n", True),
    (b"Host: x\n\n", True),
    (b"a\rb", True),
])
def test_bare_line_endings(unparsed: bytes, bare: bool) -> None:
    assert bare_line_ending(unparsed) is bare


def test_oversized_heads_get_the_rfc_statuses() -> None:
    assert oversized_head(True, 16384).status == 414
    assert oversized_head(False, 16384).status == 431
    assert "16384" in oversized_head(False, 16384).message


def test_chunk_sizes_beyond_64_bits_are_refused() -> None:
    assert chunk_size_refusal(MAX_CHUNK_SIZE) is None
    assert chunk_size_refusal(0) is None
    refusal = chunk_size_refusal(int("F" * 20, 16))
    assert refusal is not None and refusal.status == 400
