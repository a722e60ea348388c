"""One relayed request followed as its response passes by: ``Exchange``.

``Observability.watch`` creates one for every request the forwarder sends to a model; it
reads the response bytes after they were written to the client (time to first byte, token
figures, an optional capture), publishes ``inflight`` events and records the request when it
ends. It knows its owner only through ``ExchangeOwner``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.python.failure import Failure
from twisted.web.server import Request

from llamaswap import events
from llamaswap.activity import Capture, CaptureCache, frozen_headers
from llamaswap.compat.accesslog import client_ip
from llamaswap.compat.activity import captured_bodies, model_dispatched
from llamaswap.compat.gotypes import go_time
from llamaswap.compat.headers import header_map
from llamaswap.context import context_of
from llamaswap.events import EventBus
from llamaswap.logs import get_logger
from llamaswap.metrics import Metrics
from llamaswap.tokens import TokenMeter

log = get_logger()

INFLIGHT_UPDATE_INTERVAL = 0.25
ERROR_BODY_BYTES = 4096
CANCELLED = "request cancelled through POST /api/inflight/<id>/cancel"


def relative_path(request: Request, depth: int) -> str:
    """The request path below llamaswap's mount point (``depth`` segments deep, from its
    ``RequestContext``), without the query."""
    segments = request.path.split(b"/")[1 + depth:]
    return "/" + b"/".join(segments).decode("latin-1")


def client_of(request: Request) -> str:
    """The client as llama-swap names it (``X-Forwarded-For``, ``X-Real-IP``, the peer)."""
    return client_ip(_header(request, b"x-forwarded-for"), _header(request, b"x-real-ip"),
                     getattr(request.getClientAddress(), "host", "") or "")


def _header(request: Request, name: bytes) -> str | None:
    value = request.requestHeaders.getRawHeaders(name)
    return value[0].decode("latin-1") if value else None


class ExchangeOwner(Protocol):
    """What an ``Exchange`` uses of ``Observability``."""

    _clock: Any
    bus: EventBus
    captures: CaptureCache
    in_flight: dict[int, Exchange]
    metrics: Metrics
    response_listener: Callable[[str, object, int | None, int | None], None] | None

    def record(self, row: dict[str, Any], capture: tuple[Capture, int] | None) -> None:
        """Keep a finished request's activity row (and its capture)."""


def status_phrase(request: Request) -> str:
    """The reason phrase twisted.web answered ``request`` with."""
    phrase = getattr(request, "code_message", b"")
    return phrase.decode("latin-1") if isinstance(phrase, bytes) else str(phrase or "")


class Exchange:
    """One request relayed to a model, followed as its response passes by.

    Runs for every relayed request, ``chunk`` for every body chunk: what it does not need
    now it leaves for later (a capture's JSON view is built when it is read, an ``inflight``
    event's payload only when someone listens).
    """

    def __init__(self, owner: ExchangeOwner, request: Request, exchange_id: int) -> None:
        self._owner = owner
        self._clock = owner._clock
        self._request = request
        self.id = exchange_id
        context = context_of(request)
        self.model = context.model or ""
        self.method = request.method.decode("ascii", "replace")
        upstream_path = context.upstream_path
        self.path = (relative_path(request, context.depth) if upstream_path is None
                     else upstream_path)
        self.tracked = upstream_path is None or model_dispatched(self.method, upstream_path)
        """Listed in flight and kept in activity: through ``/upstream/<model>/`` only a
        request for a model endpoint is (as llama-swap); a page or file of the model server's
        own is just relayed."""
        self.client = client_of(request)
        self.started_wall = time.time()
        self.dispatched = self._clock.seconds()
        began = context.started
        self.wait = time.monotonic() - began if began is not None else None
        self.status: int | None = None
        self.content_type = ""
        self.cancelled = False
        """Ended through ``POST /api/inflight/<id>/cancel``."""
        self._req_headers: dict[str, str] | None = None
        self._resp_headers: dict[str, str] | None = None
        self._upstream_headers: Any = None
        self.first_byte: float | None = None
        self.bytes = 0
        self._last_update = self.dispatched
        self._pending_update: Any = None
        """The delayed ``inflight`` update of bytes that came too soon after the last one."""
        self._meter: TokenMeter | None = None
        self._error_body = b""
        self._failed = False
        """The upstream answered an error: its body's start says why."""
        self._broken = False
        self._capture_budget = owner.captures.budget
        self._capture_size = 0
        self._keep_req_body, self._keep_resp_body = captured_bodies(self.path)
        self._capture = self._start_capture(request, self._capture_budget)
        self._resp_body: list[bytes] = []
        context.relayed = True
        if self.tracked:
            owner.in_flight[exchange_id] = self
        if self.tracked and owner.bus.subscribers:
            owner.bus.publish(events.IN_FLIGHT, {"operation": "upsert",
                                                 "request": self.entry()})
        request.notifyFinish().addBoth(self._finished)

    def _start_capture(self, request: Request, budget: int) -> Capture | None:
        """The request half of a capture, if captures are on and its body fits."""
        if budget <= 0:
            return None
        body = b""
        content = request.content
        if content is not None and self._keep_req_body:
            # The body may be a spooled file the forwarder streams from: leave it as found.
            # Read now: twisted.web closes it when the request ends.
            position = content.tell()
            size = content.seek(0, 2)
            if size > budget:
                content.seek(position)
                return None
            content.seek(0)
            body = content.read()
            content.seek(position)
        self._capture_size = len(body)
        return Capture(self.id, self.path, self.method,
                       frozen_headers(request.requestHeaders.getAllRawHeaders()), body)

    def entry(self) -> dict[str, Any]:
        """The ``inflight`` event's view of this request: llama-swap's
        ``InflightRequestEntry`` and llamaswap's ``status``."""
        if self._req_headers is None:  # built once, when someone first listens
            request = getattr(self, "_request", None)
            self._req_headers = (header_map(request.requestHeaders.getAllRawHeaders())
                                 if request is not None else {})
        if self._resp_headers is None and self._upstream_headers is not None:
            self._resp_headers = header_map(self._upstream_headers.getAllRawHeaders())
        return {"id": str(self.id), "timestamp": go_time(self.started_wall),
                "model": self.model, "req_path": self.path, "method": self.method,
                "req_headers": self._req_headers, "remote_ip": self.client,
                "resp_headers": self._resp_headers or {}, "resp_bytes": self.bytes,
                "elapsed_ms": max(0, int((self._clock.seconds() - self.dispatched) * 1000)),
                "status": self.status}

    def request(self) -> Request | None:
        """The client's request while it is being served (``None`` once it ended)."""
        return getattr(self, "_request", None)

    # -- the forwarder calls these ----------------------------------------------------------

    def response(self, code: int, headers: Any) -> None:
        """The upstream's status line and headers arrived."""
        self.status = code
        self._failed = code >= 400
        self.content_type = _first(headers, b"content-type")
        self._meter = TokenMeter(self.content_type, _first(headers, b"content-encoding"))
        if self._capture is not None:
            self._capture.resp_headers = frozen_headers(headers.getAllRawHeaders())
        self._upstream_headers = headers
        if self.tracked and self._owner.bus.subscribers:
            self._owner.bus.publish(events.IN_FLIGHT, {"operation": "upsert",
                                                       "request": self.entry()})

    def chunk(self, data: bytes) -> None:
        """A body chunk, already written to the client. Must stay cheap and never raise."""
        if self._broken:
            return
        try:
            self._chunk(data)
        except Exception:
            self._broken = True
            log.failure("measuring a response of {model} failed; measuring stops",
                        model=self.model)

    def _chunk(self, data: bytes) -> None:
        now = self._clock.seconds()
        if self.first_byte is None:
            self.first_byte = now
        size = len(data)
        self.bytes += size
        if self._meter is not None:
            self._meter.feed(data)
        if self._failed and len(self._error_body) < ERROR_BODY_BYTES:
            self._error_body += data[:ERROR_BODY_BYTES - len(self._error_body)]
        if self._capture is not None and self._keep_resp_body:
            if self._capture_size + size <= self._capture_budget:
                self._resp_body.append(data)
                self._capture_size += size
            else:
                self._capture = None  # too big to keep: no capture rather than a partial one
        if now - self._last_update >= INFLIGHT_UPDATE_INTERVAL:
            self._last_update = now
            if self.tracked and self._owner.bus.subscribers:
                self._owner.bus.publish(events.IN_FLIGHT, {"operation": "upsert",
                                                           "request": self.entry()})
        elif self._pending_update is None and self.tracked and self._owner.bus.subscribers:
            # Too soon for another update: send one when the interval is up, so the last
            # bytes of a stream that goes quiet are shown too.
            self._pending_update = self._clock.callLater(
                INFLIGHT_UPDATE_INTERVAL - (now - self._last_update), self._send_pending)

    def _send_pending(self) -> None:
        self._pending_update = None
        self._last_update = self._clock.seconds()
        owner = self._owner
        if self.id in owner.in_flight and owner.bus.subscribers:
            owner.bus.publish(events.IN_FLIGHT, {"operation": "upsert", "request": self.entry()})

    # -- the end ----------------------------------------------------------------------------

    def _finished(self, result: object) -> None:
        owner = self._owner
        if self._pending_update is not None:
            self._pending_update.cancel()
            self._pending_update = None
        owner.in_flight.pop(self.id, None)
        if self.tracked and owner.bus.subscribers:
            owner.bus.publish(events.IN_FLIGHT, {"operation": "remove", "id": str(self.id)})
        try:
            self._record(499 if isinstance(result, Failure) else self._request.code)
        except Exception:
            log.failure("recording a request of {model} failed", model=self.model)
        # The request holds this exchange (its context's watch): without this cycle both
        # are freed as soon as twisted.web lets go of the request, not by a full collection
        # that would have to walk every finished request (tens of ms at 200 streams).
        del self._request

    def _record(self, status: int) -> None:
        now = self._clock.seconds()
        figures = self._meter.finish() if self._meter is not None else None
        ttfb = self.first_byte - self.dispatched if self.first_byte is not None else None
        tokens_per_second = figures.tokens_per_second if figures else None
        if (figures and not tokens_per_second and figures.output_tokens and
                self.first_byte is not None and figures.output_tokens > 1 and
                now - self.first_byte > 0):
            # No timings from the server: output tokens over the time they streamed.
            tokens_per_second = (figures.output_tokens - 1) / (now - self.first_byte)
        duration = self.wait or 0.0
        duration += now - self.dispatched
        error = _error_message(status, self._error_body) if status >= 400 else None
        if self.cancelled:
            error = CANCELLED
        row = {
            "ts": self.started_wall, "model": self.model, "endpoint": self.path,
            "method": self.method, "status": status, "duration_ms": duration * 1000,
            "ttfb_ms": ttfb * 1000 if ttfb is not None else None,
            "wait_ms": self.wait * 1000 if self.wait is not None else None,
            "input_tokens": figures.input_tokens if figures else None,
            "output_tokens": figures.output_tokens if figures else None,
            "cached_tokens": figures.cached_tokens if figures else None,
            "prompt_per_second": figures.prompt_per_second if figures else None,
            "tokens_per_second": tokens_per_second, "client": self.client,
            "error": error, "has_capture": self._capture is not None,
            "content_type": self.content_type,
            "draft_tokens": figures.draft_tokens if figures else None,
            "draft_acc_tokens": figures.draft_accepted_tokens if figures else None,
        }
        self._owner.metrics.exchange_finished(
            self.model, wait=self.wait, ttfb=ttfb,
            input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
            cached_tokens=row["cached_tokens"], prompt_per_second=row["prompt_per_second"],
            tokens_per_second=tokens_per_second)
        listener = self._owner.response_listener
        if listener is not None and figures is not None:
            listener(self.model, context_of(self._request).request_id or self.id,
                     figures.input_tokens, figures.cached_tokens)
        capture = None
        if self._capture is not None:
            self._capture.resp_body = b"".join(self._resp_body)
            capture = (self._capture, self._capture.footprint())
        if self.tracked:
            self._owner.record(row, capture)


def _first(headers: Any, name: bytes) -> str:
    values = headers.getRawHeaders(name) or [b""]
    value = values[0]
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _error_message(status: int, body: bytes) -> str:
    """The first message found in an error body (as llama-swap), else the status."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        data = None
    if isinstance(data, dict):
        for candidate in (data.get("error"), data.get("message"), data.get("detail")):
            if isinstance(candidate, dict):
                candidate = candidate.get("message")
            if isinstance(candidate, str) and candidate:
                return candidate[:500]
    text = body.decode("utf-8", "replace").strip()
    return text[:500] if text else str(status)
