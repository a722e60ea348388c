"""Prometheus metrics of the slot cache, in the service's registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

SAVE = "save"
"""A save before a stop (of the slots that changed since their last save)."""
IDLE_SAVE = "idle_save"
"""A save in the background, ``idleSave`` seconds after the model's last request."""
SAVE_SKIPPED = "save_skipped"
"""A stop that found every saved slot current (saved while idle, or restored and unused):
nothing written; its seconds are what the check added to the stop."""
RESTORE = "restore"
OPERATIONS = (SAVE, IDLE_SAVE, SAVE_SKIPPED, RESTORE)
"""Every ``operation`` label value (docs/metrics.md lists them)."""

_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Labelled(dict[object, object]):
    """A labelled metric's children by label values, created on first use."""

    def __init__(self, metric: Counter) -> None:
        super().__init__()
        self._metric = metric

    def __missing__(self, key: object) -> object:
        child = (self._metric.labels(*key) if isinstance(key, tuple)
                 else self._metric.labels(key))
        self[key] = child
        return child

    def __getitem__(self, key: object) -> Counter:
        return super().__getitem__(key)  # type: ignore[return-value]


class _DiskBytes(Collector):
    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("llamaswap_slot_cache_disk_bytes",
                                  "Bytes of each model's saved slot cache on disk",
                                  labels=["model"])
        for model, size in sorted(self._sizes().items()):
            gauge.add_metric([model], float(size))
        yield gauge


class SlotCacheMetrics:
    def __init__(self, registry: CollectorRegistry,
                 sizes: Callable[[], dict[str, int]] | None = None) -> None:
        r = registry
        ops = ["model", "operation"]
        self._count = Counter("llamaswap_slot_cache_operations",
                              "Slot cache saves and restores that completed (and stop-time "
                              "saves skipped as current)", ops, registry=r)
        self._tokens = Counter("llamaswap_slot_cache_tokens",
                               "Tokens saved or restored by the slot cache", ops, registry=r)
        self._bytes = Counter("llamaswap_slot_cache_bytes",
                              "Bytes written or read by slot cache saves and restores", ops,
                              registry=r)
        self._seconds = Histogram("llamaswap_slot_cache_seconds",
                                  "Time a slot cache save delayed a stop (an idle save: "
                                  "took in the background), or a restore a start",
                                  ops, buckets=_SECONDS_BUCKETS, registry=r)
        self.failures = _Labelled(Counter(
            "llamaswap_slot_cache_failures", "Slot cache operations that failed or timed out "
            "(never a failed request: the model is stopped or served without the cache)",
            ["model", "operation", "kind"], registry=r))
        self.mismatches = _Labelled(Counter(
            "llamaswap_slot_cache_fingerprint_mismatches", "Saved caches not restored because "
            "the launch changed (command, model files, context size, slot count)", ["model"],
            registry=r))
        self.verified = _Labelled(Counter(
            "llamaswap_slot_cache_restore_checks", "Restores checked by the first response's "
            "cached tokens; helped=false: the restore was not reused", ["model", "helped"],
            registry=r))
        self.evictions = _Labelled(Counter(
            "llamaswap_slot_cache_evictions", "Slot files deleted to keep within maxBytes",
            ["model"], registry=r))
        if sizes is not None:
            r.register(_DiskBytes(sizes))

    def done(self, model: str, operation: str, tokens: int, size: int, seconds: float) -> None:
        self._count.labels(model, operation).inc()
        self._tokens.labels(model, operation).inc(tokens)
        self._bytes.labels(model, operation).inc(size)
        self._seconds.labels(model, operation).observe(seconds)
