"""The web UI at ``/ui/``: static HTML, CSS and JavaScript shipped in the package.

No build step and nothing from a CDN: ``llamaswap/ui/`` (``index.html``, ``app.css`` and ES
modules under ``js/``) is served as it is. The pages talk to the same API as any client
(``/api/events``, ``/logs/stream``, ``/api/metrics/*``, ``/v1/...``) with relative URLs, so
the UI works wherever llamaswap is mounted. The files themselves are open (``auth.needs_key``);
every API call they make carries the key the user typed (see docs/ui.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web.resource import Resource
from twisted.web.static import File

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


class _UiFiles(File):
    """Static files without directory listings; pages are not cached across versions."""

    def directoryListing(self) -> Resource:
        return self.childNotFound

    def render_GET(self, request: Any) -> Any:
        request.setHeader("cache-control", "no-cache")
        return super().render_GET(request)


def mount_ui(root: Resource) -> None:
    files = _UiFiles(str(UI_DIR))
    files.contentTypes = {**files.contentTypes, ".js": "text/javascript; charset=utf-8",
                          ".css": "text/css; charset=utf-8",
                          ".html": "text/html; charset=utf-8"}
    root.putChild(b"ui", files)
