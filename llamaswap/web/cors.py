"""CORS as llama-swap does it: a preflight answer for any path.

Browsers (Open WebUI in another origin, web playgrounds) send ``OPTIONS`` before a
cross-origin POST; it is answered here without authentication and without reaching a model.
Only the headers a browser asked for are echoed, and only if they are valid header tokens.
"""

from __future__ import annotations

from twisted.web.server import Request

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
DEFAULT_ALLOW_HEADERS = "Content-Type, Authorization, Accept, X-Requested-With"
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def sanitize_request_headers(value: bytes | None) -> str:
    """The requested header names that are valid tokens, joined by ``", "``."""
    if not value:
        return ""
    names = (name.strip() for name in value.split(b","))
    return ", ".join(n.decode("ascii") for n in names if n and set(n) <= _TCHAR)


def answer_preflight(request: Request) -> None:
    requested = sanitize_request_headers(request.getHeader(b"access-control-request-headers"))
    request.setResponseCode(204)
    request.setHeader("access-control-allow-origin", "*")
    request.setHeader("access-control-allow-methods", ALLOW_METHODS)
    request.setHeader("access-control-allow-headers", requested or DEFAULT_ALLOW_HEADERS)
    request.setHeader("access-control-max-age", "86400")
    request.responseHeaders.removeHeader(b"content-type")
    request.finish()
