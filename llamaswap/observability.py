"""What llamaswap knows about itself, in one place: logs, live events, metrics, activity.

``Observability`` is created by ``LlamaSwapService`` and fed from three hooks:

- model state changes (``ModelProcess.add_observer``) -> ``modelStatus`` events, metrics;
- the forwarder (``Forwarder.watch``) -> an ``Exchange`` (``llamaswap/exchange.py``) per
  relayed request that reads the response bytes after they were written to the client
  (time to first byte, token figures, an optional capture) and records the request when it
  ends;
- the access-logged request (``request_finished``) -> request counts, and activity rows for
  model requests that never reached their model (404, 429, start failures).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.server import Request

from llamaswap import events
from llamaswap.activity import (
    ActivityStore,
    Capture,
    CaptureCache,
    StoreBusy,
    StoreClosed,
)
from llamaswap.capabilities import listing_fields
from llamaswap.compat.activity import kept_in_activity
from llamaswap.compat.info import session_headers_of, ui_config
from llamaswap.context import context_of
from llamaswap.events import EventBus
from llamaswap.exchange import Exchange, client_of, relative_path, status_phrase
from llamaswap.logs import LogRules, LogStream, ProxyLogCollector, get_logger
from llamaswap.metrics import Metrics, endpoint_label
from llamaswap.performance import PerformanceMonitor, nvml_sampler, performance_settings
from llamaswap.policy import ModelState
from llamaswap.process import ModelProcess
from llamaswap.reasons import StateReasons

if TYPE_CHECKING:
    from llamaswap.config import Config

log = get_logger()

QUEUE_POLL_INTERVAL = 0.5


class Observability:
    """Log streams, the event bus, the metrics registry, the activity store and captures."""

    def __init__(self, config: Config, processes: Mapping[str, ModelProcess], router: Any,
                 reactor: Any, log_rules: LogRules | None = None) -> None:
        """``log_rules``: the service's, whose collectors feed the proxy log while started
        (without them only model output reaches the logs)."""
        self._config = config
        self._log_rules = log_rules
        self._processes = processes
        self._router = router
        self._clock = reactor
        self.bus = EventBus()
        self.proxy_log = LogStream()
        self.upstream_log = LogStream()
        self.combined_log = LogStream()
        """``/logs``: what ``logToStdout`` sends to the process log, as llama-swap's mux."""
        self._combine = {"proxy": False, "upstream": False}
        """Which of the two logs ``/logs`` shows now (``logToStdout``, reloadable)."""
        self._combine_logs(config.log_to_stdout)
        self.proxy_log.subscribe(lambda line: self._combined("proxy", line))
        self.upstream_log.subscribe(lambda line: self._combined("upstream", line))
        self._collector = ProxyLogCollector(self.proxy_log, config.log_time_format)
        self.proxy_log.subscribe(lambda line: self._log_event("proxy", line))
        self.upstream_log.subscribe(lambda line: self._log_event("upstream", line))
        self.metrics = Metrics(processes, router, reactor)
        self.store = ActivityStore(reactor, config.store_path,
                                   config.store_max_rows if config.store_path
                                   else config.metrics_max_in_memory)
        self.captures = CaptureCache(config.capture_buffer_bytes)
        self._ids = itertools.count(1)
        self.in_flight: dict[int, Exchange] = {}
        self.open_streams: set[Callable[[], None]] = set()
        """Closers of the log and event streams being served, ended by ``stop``."""
        self.performance = _performance_monitor(config, reactor)
        """``/api/performance``'s samples; ``None`` when ``performance.disabled``."""
        self._hardware_snapshot: dict[str, Any] | None = None
        self._hardware_done = False
        self._hardware_waiters: list[Deferred[None]] = []
        self._queued = 0
        self.model_fields: Callable[[Any], dict[str, Any]] = lambda model: {}
        """More of a model's status for the UI (its slot cache, ``llamaswap.slotcache``)."""
        self.response_listener: Callable[[str, object, int | None, int | None], None] | None = None
        """Told ``(model, request id, prompt tokens, cached tokens)`` of each measured
        response (the slot cache verifies its restores with it)."""
        self._queue_poll = LoopingCall(self._poll_queue)
        self._queue_poll.clock = reactor
        self.reasons = StateReasons(config)
        """Why each model last started and stopped (``swapReason``, ``stopReason``)."""
        router.on_swap(self.reasons.swap_started)
        router.on_stop(self.reasons.stopping)
        for process in processes.values():
            process.add_observer(self._state_changed)

    def watch_process(self, process: ModelProcess) -> None:
        """Also follow a process created later (a config reload added or relaunched it)."""
        process.add_observer(self._state_changed)
        self.metrics.watch_process(process)

    def model_line(self, model_id: str, line: str) -> None:
        """A line a model printed (its own ring already has it)."""
        self.upstream_log.append(f"[{model_id}] {line}")

    def start(self) -> None:
        if self._log_rules is not None:
            self._log_rules.collectors.addObserver(self._collector)
        self._queue_poll.start(QUEUE_POLL_INTERVAL, now=False)
        if self.performance is not None:
            self.performance.start()

    def stop(self) -> None:
        if self._log_rules is not None:
            self._log_rules.collectors.removeObserver(self._collector)
        if self._queue_poll.running:
            self._queue_poll.stop()
        if self.performance is not None:
            self.performance.stop()
        for close in list(self.open_streams):
            close()

    def shutting_down(self) -> None:
        self.metrics.shutting_down = True

    # -- live events ------------------------------------------------------------------------

    def _log_event(self, source: str, line: str) -> None:
        self.bus.publish(events.LOG_DATA, {"source": source, "data": line + "\n"})

    def model_status(self) -> list[dict[str, Any]]:
        """Every configured model with its state, then every peer model (``modelStatus``,
        llama-swap's ``apiModel``), llamaswap's figures beside (``ttl``, ``pid``...)."""
        result = []
        for model_id, process in sorted(self._processes.items()):
            model = process.model
            entry: dict[str, Any] = {
                "id": model_id, "name": model.name, "description": model.description,
                "state": process.state.value, "unlisted": model.unlisted, "peerID": ""}
            if model.aliases:
                entry["aliases"] = list(model.aliases)
            shown = listing_fields(model.capabilities)
            for key in ("capabilities", "context_length"):  # as llama-swap's apiModel
                if key in shown:
                    entry[key] = shown[key]
            entry.update({"ttl": model.ttl, "pid": process.model_pid,
                          "inFlight": self._router.in_flight(model_id),
                          "lastError": process.last_error,
                          "circuit": "open" if self._router.circuit_open(model_id) else "closed",
                          **self.reasons.fields(model_id),
                          **self.model_fields(model)})
            result.append(entry)
        for peer in self._config.peers.values():
            for name in peer.models:
                result.append({"id": f"{peer.id}/{name}", "name": "", "description": "",
                               "state": "", "unlisted": False, "peerID": peer.id})
        return result

    def profile_changed(self, active: str | None) -> None:
        """The active profile changed: ``profileChanged``, then ``modelStatus`` (as
        llama-swap sends them)."""
        self.bus.publish(events.PROFILE_CHANGED, {"active": active})
        self.bus.publish(events.MODEL_STATUS, self.model_status())

    def _state_changed(self, process: ModelProcess, old: ModelState, new: ModelState) -> None:
        self.reasons.state_changed(process, old, new)
        self.bus.publish(events.MODEL_STATUS, self.model_status())

    def _poll_queue(self) -> None:
        queued = self._router.queued()
        if queued != self._queued:
            self._queued = queued
            self.bus.publish(events.QUEUE, {"queued": queued})

    def queue_status(self) -> dict[str, int]:
        return {"queued": self._router.queued()}

    def cancel(self, exchange_id: str) -> Request | None:
        """Mark a request in flight as cancelled (``POST /api/inflight/<id>/cancel``; its
        activity row says so) and return it for the web layer to end
        (``web.cancel.end_cancelled``); ``None`` if no such request is in flight."""
        exchange = self.in_flight.get(int(exchange_id)) if exchange_id.isdigit() else None
        request = exchange.request() if exchange is not None else None
        if exchange is None or request is None:
            return None
        exchange.cancelled = True
        return request

    def in_flight_snapshot(self) -> dict[str, Any]:
        return {"operation": "snapshot",
                "requests": [e.entry() for e in self.in_flight.values()]}

    # -- requests ---------------------------------------------------------------------------

    def request_id(self, request: Request) -> int:
        """``request``'s number: the access log's on llamaswap's own site; when llamaswap is
        mounted in another site, one of ours, given once and kept in its context."""
        context = context_of(request)
        if context.request_id is None:
            context.request_id = next(self._ids)
        return context.request_id

    def watch(self, request: Request, url: str) -> Exchange:
        """The forwarder's hook: a request is about to be sent to its model."""
        return Exchange(self, request, self.request_id(request))

    def request_finished(self, request: Request, status: int, seconds: float) -> None:
        """The access log's hook: every request, once it is over."""
        context = context_of(request)
        path = relative_path(request, context.depth)
        model = context.model
        self.metrics.request_finished(endpoint_label(path), self._label_of(model), status,
                                      seconds)
        if model and not context.relayed:  # relayed ones are recorded by their Exchange
            content_type = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
            self.record({"ts": time.time(), "model": model, "endpoint": path,
                         "method": request.method.decode("ascii", "replace"), "status": status,
                         "duration_ms": seconds * 1000, "client": client_of(request),
                         "error": f"{status} {status_phrase(request)}",
                         "content_type": content_type.decode("latin-1")}, None)

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: logs, captures, the store, metric labels and the performance
        monitor's settings follow it."""
        old, self._config = self._config, config
        self.reasons.reconfigure(config)
        self._combine_logs(config.log_to_stdout)
        self._collector.time_format = config.log_time_format
        self.captures.set_budget(config.capture_buffer_bytes)
        rows = config.store_max_rows if config.store_path else config.metrics_max_in_memory
        if config.store_path != old.store_path:
            self._replace_store(ActivityStore(self._clock, config.store_path, rows))
        else:
            self.store.max_rows = rows
        current = self.performance
        wanted = performance_settings(config)
        if (current is not None, current.every if current else None) != (
                wanted[0], wanted[1] if wanted[0] else None):
            running = current is not None and current.running
            if current is not None:
                current.stop()
            self.performance = _performance_monitor(config, self._clock)
            if running and self.performance is not None:
                self.performance.start()

    def ui_config(self) -> dict[str, Any]:
        """The ``uiConfig`` event: llama-swap's ``UIConfig``."""
        return ui_config(session_headers_of(self._config))

    async def hardware(self) -> dict[str, Any] | None:
        """``/api/hardware``'s snapshot, detected on a thread on first use and kept
        (``None``: it could not be taken)."""
        if self._hardware_done:
            return self._hardware_snapshot
        waiter: Deferred[None] = Deferred()
        self._hardware_waiters.append(waiter)
        if len(self._hardware_waiters) == 1:
            from twisted.internet.threads import deferToThreadPool

            from llamaswap._version import __version__
            from llamaswap.hardware import detect, load_nvml

            def detect_now() -> dict[str, Any] | None:
                return detect(__version__, nvml=load_nvml())

            d = deferToThreadPool(self._clock, self._clock.getThreadPool(), detect_now)
            d.addCallbacks(self._hardware_detected, self._hardware_failed)
        await waiter
        return self._hardware_snapshot

    def _hardware_detected(self, snapshot: dict[str, Any] | None) -> None:
        self._hardware_snapshot, self._hardware_done = snapshot, True
        waiters, self._hardware_waiters = self._hardware_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _hardware_failed(self, failure: Failure) -> None:
        log.failure("hardware detection failed", failure)
        self._hardware_detected(None)

    def _replace_store(self, store: ActivityStore) -> None:
        """Another ``store.path``: new rows go to the new store; the old one closes once
        its pending writes are done. Captures are keyed by the old store's row ids: dropped."""
        old, self.store = self.store, store
        self.captures.set_budget(0)
        self.captures.set_budget(self._config.capture_buffer_bytes)
        parent = old.parent
        if parent is not None:
            store.setServiceParent(parent)
            d = old.disownServiceParent()
            if d is not None:
                d.addErrback(lambda f: log.failure("closing the replaced activity store", f))

    def _combine_logs(self, log_to_stdout: str) -> None:
        self._combine["proxy"] = log_to_stdout in ("proxy", "both")
        self._combine["upstream"] = log_to_stdout in ("upstream", "both")

    def _combined(self, source: str, line: str) -> None:
        if self._combine[source]:
            self.combined_log.append(line)

    def _label_of(self, model: str | None) -> str:
        """A configured model, peer model or selector; ``""`` for any other name, so that a
        client naming models at random cannot grow ``/metrics`` without bound."""
        if not model:
            return ""
        config = self._config
        if (model in config.models or model in config.selectors
                or config.resolve_peer(model) is not None):
            return model
        return ""

    def record(self, row: dict[str, Any], capture: tuple[Capture, int] | None) -> None:
        """Store a finished request that is kept in activity; then announce it
        (``activity`` event)."""
        if not kept_in_activity(row["method"], row["endpoint"]):
            return
        self.store.add(row).addCallbacks(self._stored, self._not_stored, (capture,))

    def _stored(self, row_id: int, capture: tuple[Capture, int] | None) -> None:
        if capture is not None:
            capture[0].id = row_id
            self.captures.put(row_id, *capture)
        self.bus.publish(events.ACTIVITY, {"id": row_id})

    def _not_stored(self, failure: Failure) -> None:
        if failure.check(StoreBusy):  # dropped under overload: logged once by the store
            self.metrics.activity_dropped.inc()
            return
        if failure.check(StoreClosed):  # a request that ended after the store stopped
            return
        log.failure("could not record a request in the activity store", failure)


def _performance_monitor(config: Config, reactor: Any) -> PerformanceMonitor | None:
    enabled, every = performance_settings(config)
    if not enabled:
        return None
    gpus = nvml_sampler(reactor) if hasattr(reactor, "getThreadPool") else None
    return PerformanceMonitor(reactor, every, gpus=gpus)
