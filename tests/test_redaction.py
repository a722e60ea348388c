"""``llamaswap.redaction``: which query parameters are credentials, and their values gone."""

from __future__ import annotations

import pytest

from llamaswap.redaction import is_credential_name, redact_query, redact_url


@pytest.mark.parametrize("name", [
    "key", "api_key", "apikey", "API-KEY", "x-api-key", "api%5Fkey", "token", "access_token",
    "refresh_token", "hf_token", "client_secret", "password", "sig", "signature", "auth",
    "sessionid", "session_id", "code",
])
def test_credential_names(name: str) -> None:
    assert is_credential_name(name)


@pytest.mark.parametrize("name", ["model", "stream", "page", "limit", "sort", "keys_only",
                                  "tokens", "monkey", ""])
def test_other_names_are_kept(name: str) -> None:
    assert not is_credential_name(name)


def test_only_credential_values_are_replaced() -> None:
    assert redact_query("model=m&api_key=abc&stream=true") == (
        "model=m&api_key=[REDACTED]&stream=true")
    assert redact_query("key=") == "key="  # nothing to hide
    assert redact_query("token") == "token"  # no value
    assert redact_query("a=1&&b") == "a=1&&b"


def test_urls_keep_path_and_fragment() -> None:
    assert redact_url("/v1/models") == "/v1/models"
    assert redact_url("/v1/models?key=abc#top") == "/v1/models?key=[REDACTED]#top"
    assert redact_url("http://h/p?x=1&token=t=t") == "http://h/p?x=1&token=[REDACTED]"
