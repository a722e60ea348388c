"""API-key extraction and comparison, and the CORS header sanitiser (pure parts)."""

from __future__ import annotations

import base64

from twisted.web.test.requesthelper import DummyRequest

from llamaswap.web import auth, cors


def request_with(**headers: str) -> DummyRequest:
    request = DummyRequest([b""])
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name.replace("_", "-"), [value])
    return request


def test_keys_come_from_basic_password_bearer_and_x_api_key() -> None:
    basic = "Basic " + base64.b64encode(b"user:pass:with:colons").decode()
    assert auth.presented_keys(request_with(authorization=basic)) == ["pass:with:colons"]
    assert auth.presented_keys(request_with(authorization="Bearer  tok ")) == ["tok"]
    assert auth.presented_keys(request_with(x_api_key="k1", authorization="bearer k2")) == [
        "k2", "k1"]
    assert auth.presented_keys(request_with(authorization="Basic !!notbase64")) == []
    assert auth.presented_keys(request_with(authorization="Digest x")) == []


def test_key_matching_is_exact() -> None:
    keys = ("alpha-key", "beta-key")
    assert auth.key_matches("beta-key", keys)
    assert not auth.key_matches("beta-ke", keys)
    assert not auth.key_matches("beta-keyy", keys)
    assert not auth.key_matches("", keys)
    assert auth.is_authorized(request_with(authorization="Bearer alpha-key"), keys)
    assert not auth.is_authorized(request_with(authorization="Bearer nope"), keys)
    assert auth.is_authorized(request_with(), ())  # no keys configured: open


def test_only_health_index_and_preflights_are_open() -> None:
    assert not auth.needs_key("/health", b"GET")
    assert not auth.needs_key("/", b"GET")
    assert not auth.needs_key("/v1/chat/completions", b"OPTIONS")
    assert auth.needs_key("/health", b"POST")
    assert auth.needs_key("/v1/models", b"GET")
    assert auth.needs_key("/running", b"GET")


def test_requested_headers_are_sanitised() -> None:
    assert cors.sanitize_request_headers(b"X-A, bad header,\tcontent-type ,x\"y,") == (
        "X-A, content-type")
    assert cors.sanitize_request_headers(None) == ""
