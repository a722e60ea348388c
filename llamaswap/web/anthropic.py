"""Anthropic's error shape, for errors llamaswap produces on the Anthropic endpoints.

The ``anthropic`` SDK maps the status to its typed exceptions and reads
``{"type": "error", "error": {"type", "message"}}``; OpenAI's envelope would leave its users
with an unreadable message.
"""

from __future__ import annotations

ANTHROPIC_API = "anthropic"

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_body(status: int, message: str) -> dict[str, object]:
    kind = _TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
