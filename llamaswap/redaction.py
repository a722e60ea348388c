# -*- test-case-name: tests.test_redaction -*-
"""Credentials in URLs are never written down: query values that look like secrets are
replaced before a URL is logged, stored or shown.

llamaswap reads API keys only from headers, but clients (and tools that build URLs) also
put them in query strings (``?api_key=``, ``?key=``, ``?token=``); such a URL would
otherwise reach the access log, ``/logs``, the event stream and captured headers
(``Referer``, ``Location``). A parameter is a credential when its name, decoded, lower-cased
and with ``-`` read as ``_``, is one of ``CREDENTIAL_NAMES`` or ends with one of
``CREDENTIAL_SUFFIXES`` (``api_key``, ``access_token``, ``client_secret``, ``hf_token``...).
Only the value is replaced; the name stays, so a log still shows that a key was sent.
Over-redacting a harmless parameter (``sort_key``) costs nothing; missing a secret would.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

REDACTED = "[REDACTED]"

CREDENTIAL_NAMES = frozenset({
    "key", "apikey", "token", "auth", "authorization", "bearer", "jwt", "password", "passwd",
    "pwd", "pass", "secret", "signature", "sig", "credential", "credentials", "session",
    "sessionid", "session_id", "sid", "code",
})
"""Query parameter names (normalised) whose values are credentials."""

CREDENTIAL_SUFFIXES = ("_key", "_token", "_secret", "_password", "_auth", "_signature",
                       "_credential", "_credentials", "_session", "_sessionid")
"""Name endings (normalised) of credential parameters: ``api_key``, ``x_api_key``..."""


def is_credential_name(name: str) -> bool:
    """Whether a query parameter named ``name`` (as sent, percent-encoded) carries a
    credential."""
    if "%" in name or "+" in name:
        name = unquote_plus(name)
    normal = name.strip().lower().replace("-", "_")
    return normal in CREDENTIAL_NAMES or normal.endswith(CREDENTIAL_SUFFIXES)


def redact_query(query: str) -> str:
    """``query`` (without ``?``) with the value of every credential parameter replaced."""
    fields = query.split("&")
    changed = False
    for index, field in enumerate(fields):
        name, equals, value = field.partition("=")
        if equals and value and is_credential_name(name):
            fields[index] = f"{name}={REDACTED}"
            changed = True
    return "&".join(fields) if changed else query


def redact_url(url: str) -> str:
    """A URL or request target with credential query values replaced (``redact_query``)."""
    head, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_mark, fragment = rest.partition("#")
    return head + "?" + redact_query(query) + hash_mark + fragment
