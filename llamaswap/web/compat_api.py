"""llama-swap's remaining management endpoints: ``/api/version``, ``/api/hardware``,
``/api/performance``, ``/wol-health`` (docs/management-api.md)."""

from __future__ import annotations

from twisted.web.server import Request

from llamaswap._version import __version__
from llamaswap.compat.gotypes import parse_go_time
from llamaswap.compat.info import version_info
from llamaswap.web.app import App
from llamaswap.web.base import Endpoint, Routes, send_json, send_text
from llamaswap.web.errors import send_error


class Version(Endpoint):
    """``GET /api/version``: ``{"version", "commit", "build_date"}``."""

    def handle_GET(self, request: Request) -> None:
        send_json(request, version_info(__version__))


class Hardware(Endpoint):
    """``GET /api/hardware``: the host's ``HardwareSnapshot`` (taken on first use)."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    async def handle_GET(self, request: Request) -> None:
        snapshot = await self._app.observability.hardware()
        if snapshot is None:
            send_error(request, 503, "hardware detection unavailable",
                       code="service_unavailable")
            return
        send_json(request, snapshot)


class Performance(Endpoint):
    """``GET /api/performance?after=<RFC 3339>``: the sampled ``sys_stats`` and
    ``gpu_stats`` (the last hour); 503 ``{"enabled": false}`` when sampling is off."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        monitor = self._app.observability.performance
        if monitor is None:
            send_json(request, {"enabled": False}, status=503)
            return
        after = None
        raw = request.args.get(b"after")
        if raw and raw[0]:
            try:
                after = parse_go_time(raw[0].decode("latin-1"))
            except ValueError:
                send_error(request, 400, "invalid 'after' timestamp, use RFC3339 format",
                           code="invalid_query")
                return
        sys_stats, gpu_stats = monitor.current(after)
        send_json(request, {"enabled": True, "sys_stats": sys_stats, "gpu_stats": gpu_stats})


class WolHealth(Endpoint):
    """``GET /wol-health``: ``OK``, as ``/health`` (llama-swap's wake-on-LAN probe path; not
    in the access log)."""

    def handle_GET(self, request: Request) -> None:
        send_text(request, "OK")


def compat_routes(app: App) -> Routes:
    """These endpoints, by path (``root.build_root`` mounts them)."""
    return [
        (b"/api/version", Version()),
        (b"/api/hardware", Hardware(app)),
        (b"/api/performance", Performance(app)),
        (b"/wol-health", WolHealth()),
    ]
