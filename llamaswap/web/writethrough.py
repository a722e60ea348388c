"""Moved to ``llamaswap.web.fast.writes``, behind the fast-path switch; kept for the upstream
client (``llamaswap/upstream/connection.py``), which has no config at hand:
``LLAMASWAP_FAST_PATH`` alone decides there."""

from __future__ import annotations

from typing import Any

from llamaswap.web.fast import FastPath


def write_through(transport: Any) -> bool:
    """``FastPath.write_through`` as the environment alone sets it."""
    return FastPath.configure().write_through(transport)
