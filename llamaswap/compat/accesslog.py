"""The proxy's per-request log line, in llama-swap's format.

Tools that watch llama-swap's ``/logs`` stream find traffic by parsing this line::

    Request <client> "<METHOD> <path> <proto>" <status> <bytes> "<user agent>" <duration>

The path is without its query (where API keys may travel), the duration in Go's notation.
Frequently polled paths are not logged, as in llama-swap.
"""

from __future__ import annotations

from llamaswap.compat.gotypes import go_duration

UNLOGGED_PREFIXES = ("/wol-health", "/api/performance", "/metrics")


def is_logged(path: str) -> bool:
    return not path.startswith(UNLOGGED_PREFIXES)


def client_ip(forwarded_for: str | None, real_ip: str | None, peer: str) -> str:
    """The client as llama-swap names it: the first ``X-Forwarded-For`` entry, else
    ``X-Real-IP``, else the connection's address."""
    if forwarded_for:
        return forwarded_for.split(",", 1)[0].strip()
    if real_ip:
        return real_ip.strip()
    return peer


def _escaped(text: str) -> str:
    """Client-supplied text on one line: control characters and quotes escaped."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text  # what the escaping below would give, without encoding it (per request)
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def request_line(client: str, method: str, path: str, protocol: str, status: int,
                 size: int, user_agent: str, seconds: float) -> str:
    return (f'Request {_escaped(client)} "{_escaped(method)} {_escaped(path)} '
            f'{_escaped(protocol)}" {status} {size} "{_escaped(user_agent)}" '
            f"{go_duration(seconds)}")
