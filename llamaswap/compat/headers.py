"""Header maps as llama-swap shows them, without credentials.

llama-swap flattens ``http.Header`` to one value per name (the first) for captures and
in-flight rows. llamaswap leaves credentials out altogether (llama-swap shows them as
``[REDACTED]``): ``Authorization``, ``Proxy-Authorization``, ``x-api-key``, cookies; and
credential-looking query parameters are cut from URLs shown in header values (``Referer``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from llamaswap.redaction import redact_url

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie",
                            "set-cookie"})
SECRET_QUERY_KEYS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token",
                               "auth", "password", "secret", "sig", "signature"})
_URL_HEADERS = frozenset({"referer", "origin", "location"})


def _name(raw: bytes | str) -> str:
    return raw.decode("latin-1") if isinstance(raw, bytes) else raw


def scrub_query(url: str) -> str:
    """``url`` without query parameters whose names look like credentials."""
    if "?" not in url:
        return url
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in SECRET_QUERY_KEYS]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def header_map(headers: Iterable[tuple[bytes | str, Sequence[bytes | str]]]) -> dict[str, str]:
    """``getAllRawHeaders()`` pairs -> ``{name: first value}``, credentials left out."""
    out: dict[str, str] = {}
    for raw_name, values in headers:
        name = _name(raw_name)
        lowered = name.lower()
        if lowered in SECRET_HEADERS or not values or name in out:
            continue
        value = _name(values[0])
        if lowered in _URL_HEADERS:
            value = redact_url(value)
        out[name] = value
    return out
