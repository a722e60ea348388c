"""Prometheus metrics: state, load/unload durations, swap reasons, restarts, requests, tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock

from llamaswap.metrics import Metrics, endpoint_label
from llamaswap.policy import ModelState

S = ModelState


class StubProcess:
    """What Metrics reads of a ModelProcess: its id, its state, its observers."""

    def __init__(self, model_id: str) -> None:
        self.model = type("M", (), {"id": model_id})()
        self.state = S.STOPPED
        self._observers: list[Any] = []

    def add_observer(self, observer: Any) -> None:
        self._observers.append(observer)

    def go(self, new: ModelState) -> None:
        old, self.state = self.state, new
        for observer in self._observers:
            observer(self, old, new)


class StubRouter:
    def __init__(self) -> None:
        self.flying: dict[str, int] = {}
        self.waiting = 0
        self.stop_listeners: list[Callable[[str, str], None]] = []

    def on_stop(self, listener: Callable[[str, str], None]) -> None:
        self.stop_listeners.append(listener)

    def stopping(self, model: str, reason: str) -> None:
        """What the real router does just before it stops a model."""
        for listener in self.stop_listeners:
            listener(model, reason)

    def circuit_open(self, model: str) -> bool:
        return False

    def in_flight(self, model: str) -> int:
        return self.flying.get(model, 0)

    def queued(self) -> int:
        return self.waiting


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def make() -> tuple[Metrics, dict[str, StubProcess], StubRouter, Clock]:
    clock = Clock()
    processes = {m: StubProcess(m) for m in ("a", "b")}
    router = StubRouter()
    return Metrics(processes, router, clock), processes, router, clock  # type: ignore[arg-type]


def test_live_state_in_flight_and_queue_are_read_when_scraped() -> None:
    metrics, processes, router, _ = make()
    processes["a"].state = S.READY
    router.flying["a"] = 3
    router.waiting = 2
    assert value(metrics, "llamaswap_model_state", model="a", state="ready") == 1.0
    assert value(metrics, "llamaswap_model_state", model="a", state="stopped") == 0.0
    assert value(metrics, "llamaswap_model_state", model="b", state="stopped") == 1.0
    assert value(metrics, "llamaswap_requests_in_flight", model="a") == 3.0
    assert value(metrics, "llamaswap_queue_length") == 2.0


def test_load_and_unload_durations_come_from_state_changes() -> None:
    metrics, processes, _, clock = make()
    a = processes["a"]
    a.go(S.STARTING)
    clock.advance(4.0)
    a.go(S.READY)
    clock.advance(100)
    a.go(S.STOPPING)
    clock.advance(0.5)
    a.go(S.STOPPED)
    assert value(metrics, "llamaswap_model_load_seconds_sum", model="a") == 4.0
    assert value(metrics, "llamaswap_model_load_seconds_bucket", model="a", le="5.0") == 1.0
    assert value(metrics, "llamaswap_model_load_seconds_bucket", model="a", le="2.5") == 0.0
    assert value(metrics, "llamaswap_model_unload_seconds_sum", model="a") == 0.5


def test_swap_reasons_and_restart_causes() -> None:
    metrics, processes, router, _ = make()
    a = processes["a"]

    def run_once(reason: str | None) -> None:
        a.go(S.STARTING)
        a.go(S.READY)
        if reason is not None:
            router.stopping("a", reason)
        a.go(S.STOPPING)
        a.go(S.STOPPED)

    run_once("ttl")
    run_once("request")
    run_once(None)  # no reason given: counted as manual
    run_once("budget")
    run_once("reload")
    a.go(S.STARTING)
    a.go(S.READY)
    a.go(S.STOPPED)  # crashed while ready
    a.go(S.STARTING)
    a.go(S.STOPPED)  # failed to start
    a.go(S.STARTING)
    assert value(metrics, "llamaswap_swaps_total", model="a", reason="ttl") == 1.0
    assert value(metrics, "llamaswap_swaps_total", model="a", reason="request") == 1.0
    assert value(metrics, "llamaswap_swaps_total", model="a", reason="manual") == 1.0
    assert value(metrics, "llamaswap_swaps_total", model="a", reason="budget") == 1.0
    assert value(metrics, "llamaswap_swaps_total", model="a", reason="reload") == 1.0
    for cause in ("ttl", "request", "manual", "budget", "reload", "crashed", "start_failed"):
        assert value(metrics, "llamaswap_model_restarts_total", model="a", cause=cause) == 1.0
    assert value(metrics, "llamaswap_model_start_failures_total", model="a") == 1.0
    metrics.shutting_down = True
    a.go(S.READY)
    a.go(S.STOPPING)
    assert value(metrics, "llamaswap_swaps_total", model="a", reason="shutdown") == 1.0


def test_requests_and_exchange_figures() -> None:
    metrics, *_ = make()
    metrics.request_finished("/v1/chat/completions", "a", 200, 1.5)
    metrics.request_finished("/v1/chat/completions", "a", 200, 0.5)
    metrics.request_finished("/v1/chat/completions", "a", 429, 0.01)
    metrics.exchange_finished("a", wait=2.0, ttfb=0.3, input_tokens=10, output_tokens=40,
                              cached_tokens=4, prompt_per_second=500.0, tokens_per_second=25.0)
    metrics.exchange_finished("a", wait=None, ttfb=None, input_tokens=None, output_tokens=None,
                              cached_tokens=None, prompt_per_second=None,
                              tokens_per_second=None)
    labels = {"endpoint": "/v1/chat/completions", "model": "a"}
    assert value(metrics, "llamaswap_requests_total", status="200", **labels) == 2.0
    assert value(metrics, "llamaswap_requests_total", status="429", **labels) == 1.0
    assert value(metrics, "llamaswap_request_duration_seconds_sum", **labels) == 2.01
    assert value(metrics, "llamaswap_queue_wait_seconds_sum", model="a") == 2.0
    assert value(metrics, "llamaswap_queue_wait_seconds_count", model="a") == 1.0
    assert value(metrics, "llamaswap_time_to_first_byte_seconds_sum", model="a") == 0.3
    assert value(metrics, "llamaswap_prompt_tokens_total", model="a") == 10.0
    assert value(metrics, "llamaswap_completion_tokens_total", model="a") == 40.0
    assert value(metrics, "llamaswap_cached_prompt_tokens_total", model="a") == 4.0
    assert value(metrics, "llamaswap_generation_tokens_per_second_bucket", model="a",
                 le="30.0") == 1.0
    assert value(metrics, "llamaswap_generation_tokens_per_second_bucket", model="a",
                 le="20.0") == 0.0


def test_two_registries_do_not_mix() -> None:
    first, *_ = make()
    second, *_ = make()
    first.request_finished("/health", "", 200, 0.001)
    assert value(first, "llamaswap_requests_total", endpoint="/health", model="",
                 status="200") == 1.0
    assert value(second, "llamaswap_requests_total", endpoint="/health", model="",
                 status="200") is None


def test_endpoint_labels_stay_few() -> None:
    assert endpoint_label("/v1/chat/completions") == "/v1/chat/completions"
    assert endpoint_label("/upstream/org/model/props") == "/upstream"
    assert endpoint_label("/logs/stream/m") == "/logs"
    assert endpoint_label("/ui/app.js") == "/ui"
    assert endpoint_label("/wp-admin/../etc/passwd") == "other"


def test_every_metric_is_documented() -> None:
    """docs/metrics.md (which the README points to) names every family /metrics can show."""
    from pathlib import Path

    from prometheus_client import generate_latest

    from llamaswap.slotcache.metrics import SlotCacheMetrics

    metrics, *_ = make()
    SlotCacheMetrics(metrics.registry, lambda: {"m": 1})
    families = {family.name for family in text_string_to_metric_families(
        generate_latest(metrics.registry).decode())
        if not family.name.endswith("_created")}  # a counter's creation time, not a metric
    documented = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    assert families and all(name.startswith("llamaswap_") for name in families)
    missing = sorted(name for name in families
                     if f"`{name}`" not in documented and f"`{name}_total`" not in documented)
    assert missing == []
