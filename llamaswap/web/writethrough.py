"""Moved to ``llamaswap.web.fast.writes``, behind the fast-path switch; kept for
``web/h1client.py`` until the upstream client is replaced (``LLAMASWAP_FAST_PATH`` decides)."""

from __future__ import annotations

from typing import Any

from llamaswap.web.fast import FastPath


def write_through(transport: Any) -> bool:
    """``FastPath.write_through`` as the environment alone sets it."""
    return FastPath.configure().write_through(transport)
