"""``/logs*``, ``/api/events``, ``/metrics``, ``/api/metrics/*``, ``/api/captures/<id>``,
``/api/inflight`` and ``/api/queue`` (``web/queue.py``).

To add an endpoint: an ``Endpoint`` subclass taking the ``App``, and one line in
``observe_routes``.

Streams (logs, events) are push producers registered on their request: when a client reads
slower than llamaswap writes, the transport pauses the producer and lines are dropped for
that client only (a note says how many bytes were lost), so a slow reader never slows a
model's pipes or the proxy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import unquote

from twisted.internet.interfaces import IPushProducer
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from llamaswap import events
from llamaswap.compat.activity import activity_page, parse_activity_query
from llamaswap.logs import LogStream
from llamaswap.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from llamaswap.web.app import App
from llamaswap.web.base import Endpoint, NotFound, Routes, send_json, send_text
from llamaswap.web.cancel import end_cancelled
from llamaswap.web.errors import header_text, send_error
from llamaswap.web.queue import Queue
from llamaswap.web.redirect import redirect


@implementer(IPushProducer)
class _Follower:
    """One client following a stream; drops what it cannot take while paused."""

    def __init__(self, request: Request, on_resume_after_drop: Callable[[int], None]) -> None:
        self._request = request
        self._paused = False
        self._dropped = 0
        self._on_resume_after_drop = on_resume_after_drop
        self._closed = False
        self._cleanups: list[Callable[[], None]] = []
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._gone)

    def on_close(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def send(self, data: bytes) -> None:
        if self._closed:
            return
        if self._paused:
            self._dropped += len(data)
            return
        self._request.write(data)

    def close(self) -> None:
        """End the stream from our side (shutdown)."""
        if not self._closed:
            self._request.unregisterProducer()
            self._request.finish()
            self._gone(None)

    def _gone(self, _: object) -> None:
        self._closed = True
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            cleanup()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        dropped, self._dropped = self._dropped, 0
        if dropped and not self._closed:
            self._on_resume_after_drop(dropped)

    def stopProducing(self) -> None:
        self._gone(None)


def _follow(app: App, request: Request,
            on_resume_after_drop: Callable[[int], None]) -> _Follower:
    follower = _Follower(request, on_resume_after_drop)
    streams = app.observability.open_streams
    streams.add(follower.close)
    follower.on_close(lambda: streams.discard(follower.close))
    return follower


# -- logs ----------------------------------------------------------------------------------


def _wants_html(request: Request) -> bool:
    return "text/html" in header_text(request, b"accept").lower()


class Logs(Endpoint):
    """``GET /logs``: the combined log's history as text; browsers go to the UI."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        if _wants_html(request):
            redirect(request, b"/ui/")
            return
        send_text(request, self._app.observability.combined_log.text())


def _has_flag(request: Request, name: bytes) -> bool:
    """``?name`` or ``?name=...`` (twisted.web drops parameters without ``=``)."""
    query = request.uri.partition(b"?")[2]
    return any(part.partition(b"=")[0] == name for part in query.split(b"&"))


class LogStreamEndpoint(Endpoint):
    """``/logs/stream``, ``/logs/stream/proxy``, ``/logs/stream/upstream``,
    ``/logs/stream/<model>`` (IDs may contain ``/``): history first unless ``?no-history``."""

    allow_subpaths = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def _stream_for(self, name: str) -> LogStream | None:
        obs = self._app.observability
        if not name:
            return obs.combined_log
        if name == "proxy":
            return obs.proxy_log
        if name == "upstream":
            return obs.upstream_log
        model_id = self._app.config.resolve(name)
        if model_id is None:
            return None
        output = self._app.processes[model_id].output
        return output if isinstance(output, LogStream) else None

    def handle_GET(self, request: Request) -> None:
        name = unquote("/".join(s.decode("latin-1") for s in request.postpath or []).strip("/"))
        stream = self._stream_for(name)
        if stream is None:
            send_error(request, 400, "invalid logger. Use 'proxy', 'upstream' or a model's ID",
                       code="invalid_logger")
            return
        request.setHeader("content-type", "text/plain; charset=utf-8")
        request.setHeader("cache-control", "no-cache")
        request.setHeader("x-content-type-options", "nosniff")
        request.setHeader("x-accel-buffering", "no")
        follower = _follow(self._app, request, lambda n: follower.send(
            f"\n— {n} bytes dropped —\n".encode()))
        history = "" if _has_flag(request, b"no-history") else stream.text()
        request.write(history.encode())  # also sends the headers when there is no history
        follower.on_close(stream.subscribe(lambda line: follower.send((line + "\n").encode())))


# -- events --------------------------------------------------------------------------------


def _sse(message: dict[str, str]) -> bytes:
    return b"event:message\ndata:" + json.dumps(message, separators=(",", ":")).encode() + \
        b"\n\n"


def _sse_headers(request: Request) -> None:
    for name, value in (("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                        ("x-content-type-options", "nosniff"), ("x-accel-buffering", "no")):
        request.setHeader(name, value)


def _log_history(follower: _Follower, app: App) -> None:
    obs = app.observability
    for source, stream in (("proxy", obs.proxy_log), ("upstream", obs.upstream_log)):
        follower.send(_sse(events.envelope(events.LOG_DATA,
                                           {"source": source, "data": stream.text()})))


class Events(Endpoint):
    """``GET /api/events``: server-sent events, starting with a snapshot in llama-swap's
    order (§5.2), then llamaswap's ``queue`` event; ``/api/events/logs`` below it."""

    isLeaf = False

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app
        self.putChild(b"logs", LogEvents(app))

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        return NotFound()

    def _snapshot(self, follower: _Follower, with_logs: bool) -> None:
        obs = self._app.observability
        if with_logs:
            _log_history(follower, self._app)
        follower.send(_sse(events.envelope(events.MODEL_STATUS, obs.model_status())))
        follower.send(_sse(events.envelope(events.UI_CONFIG, obs.ui_config())))
        follower.send(_sse(events.envelope(events.PROFILE_CHANGED,
                                           {"active": self._app.names.active_profile})))
        follower.send(_sse(events.envelope(events.IN_FLIGHT, obs.in_flight_snapshot())))
        follower.send(_sse(events.envelope(events.QUEUE, obs.queue_status())))

    def handle_GET(self, request: Request) -> None:
        _sse_headers(request)
        # After drops the client's picture is stale: send the state again (not the logs).
        follower = _follow(self._app, request,
                           lambda _: self._snapshot(follower, with_logs=False))
        self._snapshot(follower, with_logs=True)
        follower.on_close(self._app.observability.bus.subscribe(
            lambda message: follower.send(_sse(message))))


class LogEvents(Endpoint):
    """``GET /api/events/logs``: only the ``logData`` events of ``/api/events`` (each log's
    history, then its lines), for tools that follow the logs and nothing else."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        _sse_headers(request)
        follower = _follow(self._app, request, lambda n: None)
        _log_history(follower, self._app)

        def forward(message: dict[str, str]) -> None:
            if message["type"] == events.LOG_DATA:
                follower.send(_sse(message))

        follower.on_close(self._app.observability.bus.subscribe(forward))


# -- metrics and activity ------------------------------------------------------------------


class Metrics(Endpoint):
    """``GET /metrics``: Prometheus text format."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        body = self._app.observability.metrics.render()
        request.setHeader("content-type", METRICS_CONTENT_TYPE)
        request.setHeader("content-length", str(len(body)))
        request.write(body)
        request.finish()


def _models_arg(request: Request) -> list[str]:
    return [m.decode("utf-8", "replace") for m in request.args.get(b"model", []) if m]


class Activity(Endpoint):
    """``GET /api/metrics/activity?model=&start=&end=&min_id=&max_id=&page=&limit=&sort=
    &order=`` (and llamaswap's ``status=``, ``path=``): llama-swap's ``ActivityPage``."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    async def handle_GET(self, request: Request) -> None:
        try:
            query = parse_activity_query(request.args)
        except ValueError as e:
            send_error(request, 400, str(e), code="invalid_query")
            return
        result = await self._app.observability.store.page(query)
        captures = self._app.observability.captures
        for row in result["data"]:
            row["has_capture"] = row["id"] in captures
        send_json(request, activity_page(result["data"], query.page, query.limit,
                                         result["total"]))


class Stats(Endpoint):
    """``GET /api/metrics/stats?model=``: llama-swap's ``ActivityStats`` (totals and speed
    histograms), per-model figures beside (``models``)."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    async def handle_GET(self, request: Request) -> None:
        models = [m.strip() for m in _models_arg(request) if m.strip()]
        send_json(request, await self._app.observability.store.stats(models))


class Captures(Endpoint):
    """``GET /api/captures/<id>``: the captured request and response of an activity row."""

    allow_subpaths = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        raw = b"/".join(request.postpath or []).strip(b"/")
        if not raw.isdigit():
            send_error(request, 400, "invalid capture ID", code="invalid_capture_id")
            return
        capture = self._app.observability.captures.get(int(raw))
        if capture is None:
            send_error(request, 404, "capture not found", code="not_found")
            return
        send_json(request, capture)


class InFlight(Endpoint):
    """``GET /api/inflight``: requests being relayed right now (llamaswap's);
    ``POST /api/inflight/<id>/cancel``: end one (llama-swap's)."""

    allow_subpaths = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        if request.postpath not in ([], [b""]):
            NotFound().render(request)
            return
        send_json(request, self._app.observability.in_flight_snapshot())

    def handle_POST(self, request: Request) -> None:
        segments = request.postpath or []
        if len(segments) != 2 or segments[1] != b"cancel" or not segments[0]:
            NotFound().render(request)
            return
        cancelled = self._app.observability.cancel(unquote(segments[0].decode("latin-1")))
        if cancelled is None:
            send_error(request, 404, "inflight request not found", code="not_found")
            return
        end_cancelled(cancelled)
        send_json(request, {"msg": "ok"})


class _LogsNode(Resource):
    """``/logs`` itself, with ``/logs/stream...`` below it."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._logs = Logs(app)
        self.putChild(b"stream", LogStreamEndpoint(app))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self._logs if path == b"" else NotFound()

    def render(self, request: Request) -> bytes | int:
        return self._logs.render(request)


def observe_routes(app: App) -> Routes:
    """The observability endpoints, by path."""
    return [
        (b"/logs", _LogsNode(app)),
        (b"/api/events", Events(app)),
        (b"/metrics", Metrics(app)),
        (b"/api/metrics/activity", Activity(app)),
        (b"/api/metrics/stats", Stats(app)),
        (b"/api/captures", Captures(app)),
        (b"/api/inflight", InFlight(app)),
        (b"/api/queue", Queue(app)),
    ]
