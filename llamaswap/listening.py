# -*- test-case-name: tests.test_listening -*-
"""The listen backlog llamaswap asks for when an endpoint string names none.

Twisted's stream server endpoints (``tcp:``, ``tcp6:``, ``ssl:``, ``unix:``) listen with a
backlog of 50. A burst of clients connecting at once (hundreds of streaming requests, as an
agent fan-out or a benchmark sends them) overflows that queue whenever the reactor is busy
for a moment, which on a loaded machine it is: the kernel then drops handshakes, and clients
that already saw their connection established get it reset before any answer. A backlog of
``LISTEN_BACKLOG`` absorbs such a burst; the kernel still caps it at
``net.core.somaxconn``. An explicit ``backlog=`` in the endpoint string is kept.
"""

from __future__ import annotations

import re

LISTEN_BACKLOG = 1024
"""Pending connections the kernel may hold for llamaswap before it accepts them."""

_TAKES_BACKLOG = frozenset({"tcp", "tcp6", "ssl", "unix"})
_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def with_backlog(endpoint: str, backlog: int = LISTEN_BACKLOG) -> str:
    """``endpoint`` with ``:backlog=N`` added if its kind takes one and it names none.

    Other kinds (``systemd:`` sockets, whose backlog systemd set, or plugins) are returned
    unchanged.
    """
    parts = _UNESCAPED_COLON.split(endpoint)
    if parts[0].strip().lower() not in _TAKES_BACKLOG or len(parts) < 2:
        return endpoint
    if any(part.startswith("backlog=") for part in parts[1:]):
        return endpoint
    return f"{endpoint}:backlog={backlog}"
