"""The web UI at ``/ui/``: static HTML, CSS and JavaScript shipped in the package.

No build step and nothing from a CDN: ``llamaswap/ui/`` (``index.html``, ``app.css`` and ES
modules under ``js/``) is served as it is. The pages talk to the same API as any client
(``/api/events``, ``/logs/stream``, ``/api/metrics/*``, ``/v1/...``) with relative URLs, so
the UI works wherever llamaswap is mounted. The files themselves are open (``auth.needs_key``);
every API call they make carries the key the user typed (see docs/ui.md).

The UI routes with the URL's fragment (``ui/#/models``); llama-swap's UI uses paths
(``ui/models``), so those paths are redirected to their fragment form: links and redirects
written for llama-swap (``GET /upstream`` goes to ``ui/models``) land on the right page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import File

from llamaswap.web.errors import send_error

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

PAGES = frozenset({"activity", "models", "timeline", "queue", "logs", "playground", "hardware",
                   "performance", "settings"})
"""The UI's pages, as llama-swap-style paths below ``ui/``."""


def fragment_location(page: str, rest: list[str]) -> bytes:
    """The relative redirect from ``ui/<page>/<rest...>`` to ``ui/#/<page>/<rest...>``:
    relative, so it holds under any mount prefix."""
    up = "../" * len(rest) if rest else "./"
    return (up + "#/" + "/".join([page, *rest])).encode("utf-8")


class _ToFragment(Resource):
    isLeaf = True

    def __init__(self, page: str) -> None:
        super().__init__()
        self._page = page

    def render(self, request: Any) -> bytes:
        rest = [s.decode("utf-8", "replace") for s in request.postpath or []]
        request.setResponseCode(302)
        request.setHeader("location", fragment_location(self._page, rest))
        request.setHeader("cache-control", "no-cache")
        return b""


class _FileError(Resource):
    """An error in the envelope, like on every other path (twisted.web's is HTML)."""

    isLeaf = True

    def __init__(self, status: int, message: str) -> None:
        super().__init__()
        self._status = status
        self._message = message

    def render(self, request: Any) -> int:
        send_error(request, self._status, self._message)
        return NOT_DONE_YET


class _UiFiles(File):
    """Static files without directory listings; pages are not cached across versions;
    methods other than GET and HEAD get the 405 envelope, as on every other path."""

    childNotFound = _FileError(404, "no such file in the web UI")  # type: ignore[assignment]
    forbidden = _FileError(403, "this file of the web UI cannot be read")  # type: ignore[assignment]

    contentTypes = {**File.contentTypes, ".js": "text/javascript; charset=utf-8",
                    ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8"}

    def directoryListing(self) -> Resource:
        return self.childNotFound

    def getChild(self, path: bytes, request: Any) -> Resource:
        if b"\x00" in path:
            return self.childNotFound  # no file name holds a NUL (the OS would refuse it)
        name = path.decode("utf-8", "replace")
        if name in PAGES and Path(self.path) == UI_DIR:
            return _ToFragment(name)
        child: Resource = super().getChild(path, request)
        return child

    def render(self, request: Any) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            method = request.method.decode("ascii", "replace")
            send_error(request, 405, f"method {method} not allowed on this path",
                       headers={"allow": "GET, HEAD"})
            return NOT_DONE_YET
        return super().render(request)

    def render_GET(self, request: Any) -> Any:
        request.setHeader("cache-control", "no-cache")
        return super().render_GET(request)


def mount_ui(root: Resource) -> None:
    root.putChild(b"ui", _UiFiles(str(UI_DIR)))
