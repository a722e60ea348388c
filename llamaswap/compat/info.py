"""``/api/version`` and the ``uiConfig`` event, as llama-swap's UI reads them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_SESSION_HEADERS = ("X-Session-ID", "X-Litellm-Session-Id")
"""Request headers the activity page groups rows by (llama-swap's default)."""


def version_info(version: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``{"version", "commit", "build_date"}``; commit and date come from the build
    (``LLAMASWAP_COMMIT``, ``LLAMASWAP_BUILD_DATE``, set by the container build), else
    ``unknown``."""
    return {"version": version,
            "commit": environ.get("LLAMASWAP_COMMIT", "").strip() or "unknown",
            "build_date": environ.get("LLAMASWAP_BUILD_DATE", "").strip() or "unknown"}


def ui_config(session_headers: Sequence[str] | None = None) -> dict[str, Any]:
    """llama-swap's ``UIConfig``: which request headers name a session."""
    headers = DEFAULT_SESSION_HEADERS if session_headers is None else session_headers
    return {"activity": {"session_id": list(headers)}}


def session_headers_of(config: Any) -> Sequence[str] | None:
    """``ui.activity.session_id`` from a config that has the ``ui`` section, else ``None``
    (the default). Read loosely: the section's parser lives with the config."""
    ui = getattr(config, "ui", None)
    activity = getattr(ui, "activity", None) if ui is not None else None
    if isinstance(ui, Mapping):
        activity = ui.get("activity")
    if isinstance(activity, Mapping):
        found = activity.get("session_id")
    else:
        found = getattr(activity, "session_id", None)
    if isinstance(found, (list, tuple)) and all(isinstance(h, str) for h in found):
        return list(found)
    return None
