"""Prometheus metrics about swapping, queueing, requests and tokens (``GET /metrics``).

Built on ``prometheus-client`` with a registry per ``LlamaSwapService``, so two instances in
one process (or in tests) do not mix. Gauges of live state (model state, requests in flight,
queue length) are read from the models and the router when scraped; everything else is
counted as it happens on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llamaswap.policy import ModelState
from llamaswap.process import ModelProcess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SWAP_REASONS = ("request", "ttl", "manual", "shutdown", "reload", "hung", "budget")
"""Why a ready model was stopped. Budget evictions are swaps for a request today
(``request``); ``budget`` is reserved for when the router tells them apart."""

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SPEED_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000)

KNOWN_ENDPOINTS = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/rerank",
    "/v1/reranking", "/reranking", "/v1/messages", "/v1/messages/count_tokens",
    "/v1/responses", "/v1/audio/speech", "/v1/audio/transcriptions",
    "/v1/images/generations", "/v1/images/edits", "/completion", "/infill",
    "/v1/models", "/models", "/running", "/unload", "/health", "/metrics", "/logs",
    "/api/events", "/api/metrics/activity", "/api/metrics/stats",
})


def endpoint_label(path: str) -> str:
    """A low-cardinality label for a request path (relative to llamaswap's mount point)."""
    if path in KNOWN_ENDPOINTS:
        return path
    for prefix in ("/upstream", "/logs", "/ui", "/api/models", "/api/captures"):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return "other"


class _Children(dict[Any, Any]):
    """A labelled metric's children by their label values (one value, or a tuple of them).

    ``labels()`` validates, converts and locks on every call (about half of what metrics
    cost per request); a plain dict lookup finds the same child. Children are never removed
    here (no ``remove``/``clear``), so a cached one stays the one the registry exposes, and
    one is still created only when first used, as ``labels()`` does.
    """

    __slots__ = ("_labels",)

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self._labels = metric.labels

    def __missing__(self, key: Any) -> Any:
        child = self._labels(*key) if isinstance(key, tuple) else self._labels(key)
        self[key] = child
        return child


class _LiveState(Collector):
    """Model states, requests in flight and the queue, read at scrape time."""

    def __init__(self, processes: Mapping[str, ModelProcess], router: Any) -> None:
        self._processes = processes
        self._router = router

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily("llamaswap_model_state",
                                  "1 for the state each model is in, 0 for the others",
                                  labels=["model", "state"])
        in_flight = GaugeMetricFamily("llamaswap_requests_in_flight",
                                      "Requests being served by each model", labels=["model"])
        for model_id, process in sorted(self._processes.items()):
            for s in ModelState:
                state.add_metric([model_id, s.value], 1.0 if process.state is s else 0.0)
            in_flight.add_metric([model_id], float(self._router.in_flight(model_id)))
        yield state
        yield in_flight
        yield GaugeMetricFamily("llamaswap_queue_length",
                                "Requests admitted and waiting for their model",
                                value=float(self._router.queued()))


class Metrics:
    """The service's Prometheus registry and the hooks that feed it."""

    def __init__(self, processes: Mapping[str, ModelProcess], router: Any, clock: Any) -> None:
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(_LiveState(processes, router))
        self.load_seconds = Histogram(
            "llamaswap_model_load_seconds", "Time from starting a model until it is ready",
            ["model"], buckets=_DURATION_BUCKETS, registry=r)
        self.unload_seconds = Histogram(
            "llamaswap_model_unload_seconds", "Time from stopping a model until it exited",
            ["model"], buckets=_DURATION_BUCKETS, registry=r)
        self.swaps = Counter(
            "llamaswap_swaps", "Ready models stopped, by the model and why (request: evicted "
            "for another model; ttl; manual: unload API; shutdown; reload; hung)",
            ["model", "reason"], registry=r)
        self.restarts = Counter(
            "llamaswap_model_restarts", "Starts of a model that ran before, by what ended "
            "its previous run (crashed, start_failed, request, ttl, manual, shutdown)",
            ["model", "cause"], registry=r)
        self.start_failures = Counter(
            "llamaswap_model_start_failures", "Starts that failed (exit or health timeout)",
            ["model"], registry=r)
        self.activity_dropped = Counter(
            "llamaswap_activity_dropped", "Activity rows dropped: the store was too far behind",
            registry=r)
        self.requests = Counter(
            "llamaswap_requests", "Finished HTTP requests",
            ["endpoint", "model", "status"], registry=r)
        self.request_seconds = Histogram(
            "llamaswap_request_duration_seconds", "Whole request duration, waiting included",
            ["endpoint", "model"], buckets=_DURATION_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "llamaswap_queue_wait_seconds", "Time a request waited for its model "
            "(queue and model load) before it was sent upstream",
            ["model"], buckets=_FAST_BUCKETS, registry=r)
        self.ttfb = Histogram(
            "llamaswap_time_to_first_byte_seconds", "Time from sending a request upstream "
            "to the first byte of the response body", ["model"], buckets=_FAST_BUCKETS,
            registry=r)
        self.prompt_tokens = Counter(
            "llamaswap_prompt_tokens", "Prompt (input) tokens reported by the upstream",
            ["model"], registry=r)
        self.completion_tokens = Counter(
            "llamaswap_completion_tokens", "Completion (output) tokens reported by the upstream",
            ["model"], registry=r)
        self.cached_tokens = Counter(
            "llamaswap_cached_prompt_tokens", "Prompt tokens served from the upstream's cache",
            ["model"], registry=r)
        self.generation_speed = Histogram(
            "llamaswap_generation_tokens_per_second", "Generation speed per request",
            ["model"], buckets=_SPEED_BUCKETS, registry=r)
        self.prompt_speed = Histogram(
            "llamaswap_prompt_tokens_per_second", "Prompt processing speed per request",
            ["model"], buckets=_SPEED_BUCKETS, registry=r)
        self._by_request = _Children(self.requests)
        self._by_request_seconds = _Children(self.request_seconds)
        self._by_queue_wait = _Children(self.queue_wait)
        self._by_ttfb = _Children(self.ttfb)
        self._by_prompt_tokens = _Children(self.prompt_tokens)
        self._by_completion_tokens = _Children(self.completion_tokens)
        self._by_cached_tokens = _Children(self.cached_tokens)
        self._by_generation_speed = _Children(self.generation_speed)
        self._by_prompt_speed = _Children(self.prompt_speed)
        self._since: dict[str, float] = {}
        self._stop_reason: dict[str, str] = {}
        self._last_end: dict[str, str] = {}
        self._started_before: set[str] = set()
        self.shutting_down = False
        router.on_stop(self.note_stop_reason)  # the router says why it stops a model
        for process in processes.values():
            process.add_observer(self._state_changed)

    def watch_process(self, process: ModelProcess) -> None:
        """Follow a model process created after start-up (a config reload)."""
        process.add_observer(self._state_changed)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- swaps ------------------------------------------------------------------------------

    def note_stop_reason(self, model: str, reason: str) -> None:
        """Say why ``model`` is about to be stopped (the router's hook, when it has one)."""
        self._stop_reason[model] = reason

    def _state_changed(self, process: ModelProcess, old: ModelState, new: ModelState) -> None:
        model = process.model.id
        now = self._clock.seconds()
        since = self._since.get(model)
        self._since[model] = now
        if new is ModelState.STARTING:
            if model in self._started_before:
                self.restarts.labels(model, self._last_end.get(model, "manual")).inc()
            self._started_before.add(model)
        elif new is ModelState.READY and old is ModelState.STARTING and since is not None:
            self.load_seconds.labels(model).observe(now - since)
        elif new is ModelState.STOPPING:
            reason = self._stop_reason.pop(model, None)
            if reason is None:
                reason = "shutdown" if self.shutting_down else "manual"
            if old is ModelState.READY:
                self.swaps.labels(model, reason).inc()
            self._last_end[model] = reason if old is ModelState.READY else "start_failed"
        elif new is ModelState.STOPPED:
            if old is ModelState.STOPPING and since is not None:
                self.unload_seconds.labels(model).observe(now - since)
            elif old is ModelState.READY:
                self._last_end[model] = "crashed"
            elif old is ModelState.STARTING:
                self._last_end[model] = "start_failed"
                self.start_failures.labels(model).inc()

    # -- requests ---------------------------------------------------------------------------

    def request_finished(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        # Keyed by the status itself: ``labels()`` makes the same child of ``str(status)``.
        self._by_request[endpoint, model, status].inc()
        self._by_request_seconds[endpoint, model].observe(seconds)

    def exchange_finished(self, model: str, *, wait: float | None, ttfb: float | None,
                          input_tokens: int | None, output_tokens: int | None,
                          cached_tokens: int | None, prompt_per_second: float | None,
                          tokens_per_second: float | None) -> None:
        """One request relayed from ``model``: its timings and the tokens it reported."""
        if wait is not None:
            self._by_queue_wait[model].observe(wait)
        if ttfb is not None:
            self._by_ttfb[model].observe(ttfb)
        if input_tokens:
            self._by_prompt_tokens[model].inc(input_tokens)
        if output_tokens:
            self._by_completion_tokens[model].inc(output_tokens)
        if cached_tokens:
            self._by_cached_tokens[model].inc(cached_tokens)
        if tokens_per_second:
            self._by_generation_speed[model].observe(tokens_per_second)
        if prompt_per_second:
            self._by_prompt_speed[model].observe(prompt_per_second)
