"""What a pass-through request (``/upstream/<model>/...``, ``/comfyui/...``) may do to a
model that is not running: pure policy, llama-swap's rules (``docs/upstream.md``).

A browser tab left open on a model's own web page keeps fetching its scripts and images,
and reconnecting its websocket. Such requests must not start (and so swap in) the model:
they are answered 409 while the model is not ready, and served normally once it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from twisted.web.http_headers import Headers

from llamaswap.config import Config

__all__ = ["COMFYUI_MODEL", "comfyui_refusal", "is_websocket_upgrade", "matches_ignored_path",
           "refusal"]

COMFYUI_MODEL = "comfyui_auto"
"""The model ``/comfyui/`` serves (llama-swap's fixed name)."""


def is_websocket_upgrade(headers: Headers) -> bool:
    """``Connection: upgrade`` with ``Upgrade: websocket`` (any case, in lists)."""
    connection = b",".join(headers.getRawHeaders(b"connection", [])).lower()
    upgrade = b",".join(headers.getRawHeaders(b"upgrade", [])).lower()
    return (b"upgrade" in (t.strip() for t in connection.split(b","))
            and b"websocket" in (t.strip() for t in upgrade.split(b",")))


@lru_cache(maxsize=16)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def matches_ignored_path(path: str, patterns: Sequence[str]) -> bool:
    """Whether ``upstream.ignorePaths`` covers ``path`` (the decoded path below the model,
    no query); a pattern may match anywhere in it, as Go's ``MatchString``."""
    return any(p.search(path) for p in _compiled(tuple(patterns)))


def refusal(config: Config, model_id: str, ready: bool, path: str,
            websocket: bool) -> str | None:
    """Why a request for a local model that is not ``ready`` must not start it (409), or
    ``None`` when it may go through (and start the model if need be)."""
    if ready:
        return None
    if matches_ignored_path(path, config.ignore_paths):
        return f"model {model_id} is not loaded; path matches upstream.ignorePaths"
    if websocket and config.models[model_id].ignore_websockets:
        return f"model {model_id} is not loaded; ignored websocket requests cannot start it"
    return None


def comfyui_refusal(path: str, ready: bool) -> str | None:
    """Only ``/comfyui/`` itself may start ComfyUI: its pages, APIs and websocket then."""
    if path != "/" and not ready:
        return f"model {COMFYUI_MODEL} is not loaded; only /comfyui/ can start it"
    return None
