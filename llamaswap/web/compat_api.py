"""llama-swap's remaining management endpoints: ``/api/version``, ``/api/hardware``,
``/api/performance``, ``/wol-health`` (docs/management-api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.resource import Resource
from twisted.web.server import Request

from llamaswap._version import __version__
from llamaswap.compat.gotypes import parse_go_time
from llamaswap.compat.info import version_info
from llamaswap.web.errors import send_error
from llamaswap.web.resources import _Endpoint, mount, send_json, send_text

if TYPE_CHECKING:
    from llamaswap.service import LlamaSwapService


class Version(_Endpoint):
    """``GET /api/version``: ``{"version", "commit", "build_date"}``."""

    def handle_GET(self, request: Request) -> None:
        send_json(request, version_info(__version__))


class Hardware(_Endpoint):
    """``GET /api/hardware``: the host's ``HardwareSnapshot`` (taken on first use)."""

    def __init__(self, app: LlamaSwapService) -> None:
        super().__init__()
        self._app = app

    async def handle_GET(self, request: Request) -> None:
        snapshot = await self._app.observability.hardware()
        if snapshot is None:
            send_error(request, 503, "hardware detection unavailable",
                       code="service_unavailable")
            return
        send_json(request, snapshot)


class Performance(_Endpoint):
    """``GET /api/performance?after=<RFC 3339>``: the sampled ``sys_stats`` and
    ``gpu_stats`` (the last hour); 503 ``{"enabled": false}`` when sampling is off."""

    def __init__(self, app: LlamaSwapService) -> None:
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


class WolHealth(_Endpoint):
    """``GET /wol-health``: ``OK``, as ``/health`` (llama-swap's wake-on-LAN probe path; not
    in the access log)."""

    def handle_GET(self, request: Request) -> None:
        send_text(request, "OK")


def mount_compat(root: Resource, app: LlamaSwapService) -> None:
    """Put these endpoints into ``root`` (called by ``build_root``)."""
    mount(root, b"/api/version", Version())
    mount(root, b"/api/hardware", Hardware(app))
    mount(root, b"/api/performance", Performance(app))
    mount(root, b"/wol-health", WolHealth())
