# -*- test-case-name: tests.test_queue_api -*-
"""``GET /api/queue``: the requests waiting for a model, for the UI's Queue page.

Read-only and answered from the router's state (``Router.waiting``), so it costs nothing
while nothing waits. API keys scoped to ``inference`` may not read it (it is not a model
path; ``web/root.py`` decides).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from llamaswap.tickets import Ticket
from llamaswap.web.app import App
from llamaswap.web.base import Endpoint, send_json


def queue_row(ticket: Ticket, now: float) -> dict[str, Any]:
    """One waiting request as the Queue page reads it (``docs/ui.md``)."""
    return {
        "position": ticket.position(),
        "id": ticket.access_id,
        "model": ticket.model,
        "req_path": ticket.path,
        "waited_ms": max(0, round((now - ticket.arrived) * 1000)),
        "eta_ms": round(ticket.eta() * 1000),
    }


class Queue(Endpoint):
    """``GET /api/queue``: ``{"requests": [...]}``, loading ones first, then by position."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        now = self._app.reactor.seconds()
        rows = [queue_row(ticket, now) for ticket in self._app.router.waiting()]
        send_json(request, {"requests": rows})
