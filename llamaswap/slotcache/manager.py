"""The slot cache's mechanism: save before a stop, restore before ready, verify, evict.

``SlotCacheManager`` is given to each ``ModelProcess`` whose model has ``slotCache`` as its
launch hooks (``llamaswap.process.LaunchHooks``):

- ``before_start``: the model's cache directory exists before its command runs (llama-server
  exits when ``--slot-save-path`` is missing) and its model files are stamped.
- ``after_healthy``: runs while the model is still *starting*, so no request can reach it:
  reads ``/props``, compares fingerprints and restores the saved slots (or removes a stale
  cache), bounded by ``restoreTimeout``. It never fails a start; a failure means a cold start.
  A model without a health check gets here as soon as it is spawned: the restore first
  waits for llama-server's ``/health`` (bounded by ``healthCheckTimeout``).
- ``before_stop``: runs while the model is *stopping* (no new request is granted) and before
  any signal: saves every slot that holds tokens (all requests at once), bounded by
  ``saveTimeout``, then evicts the oldest caches beyond the budgets. It never fails or
  blocks a stop beyond its limit.

The first response after a restore tells whether it helped (``response_seen``). Everything
is counted (``SlotCacheMetrics``), published as ``slotCache`` events and logged. Reactor
thread only; every wait is on the injected clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    TimeoutError,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from llamaswap.health import HealthTimeout, Probe, ReadinessPoller, http_probe
from llamaswap.logs import get_logger, literal
from llamaswap.slotcache import store
from llamaswap.slotcache.client import HttpSlotApi, SlotApi, SlotApiError
from llamaswap.slotcache.config import SlotCacheRoot, model_cache_dir
from llamaswap.slotcache.metrics import SlotCacheMetrics
from llamaswap.slotcache.policy import (
    CacheEntry,
    FileStamp,
    choose_evictions,
    fingerprint,
    fingerprint_differences,
    model_files,
    restore_helped,
    slots_to_save,
)

EVENT = "slotCache"
"""Event type on ``/api/events``: ``{"model", "action", ...}`` for saves, restores,
fingerprint mismatches, verifications, evictions and failures."""

Publish = Callable[[str, Any], None]
ApiFactory = Callable[[Any], SlotApi]
"""Builds the slot API for a ``ModelConfig`` (its proxy URL and upstream headers)."""

access_log = get_logger("llamaswap.access")

_HEALTH = "/health"
"""llama-server's readiness endpoint: 503 while loading, 200 once its slots exist."""


class _NotServing(Exception):
    """A model without a health check did not start answering in time: no restore."""


@dataclass
class _Launch:
    """What is known about one run of a model: set at start, completed once healthy."""

    cmd: tuple[str, ...]
    files: list[FileStamp]
    fingerprint: dict[str, Any] | None = None
    unverified: int = 0
    """Tokens restored that no response has confirmed yet (0: nothing to verify)."""


@dataclass
class ModelCacheStatus:
    """The numbers shown for a model in ``/running`` and the UI."""

    bytes: int = 0
    tokens: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class SlotCacheManager:
    """Launch hooks for every ``slotCache`` model, plus the cache's bookkeeping."""

    log = get_logger()

    def __init__(self, root: SlotCacheRoot, clock: IReactorTime, api_factory: ApiFactory,
                 *, models: Mapping[str, Any] | None = None, publish: Publish | None = None,
                 metrics: SlotCacheMetrics | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 serving_probe: Callable[[Any], Probe] | None = None) -> None:
        """``wall_clock`` dates saves: they order caches for eviction across restarts.
        ``serving_probe`` builds the probe of a model's ``/health`` (for models without a
        health check); by default an HTTP GET on ``clock``, which must then be a reactor."""
        self._root = root
        self._wall_clock = wall_clock
        self._clock = clock
        self._api_factory = api_factory
        self._models: Mapping[str, Any] = models or {}
        self._publish = publish
        self.metrics = metrics
        self._serving_probe = serving_probe or (
            lambda model: http_probe(clock, model.proxy.rstrip("/") + _HEALTH))
        self._launches: dict[str, _Launch] = {}
        self._status: dict[str, ModelCacheStatus] = {}
        self._load_status()

    @classmethod
    def for_config(cls, config: Any, reactor: Any) -> SlotCacheManager:
        """The manager of a service: llama-server reached at each model's ``proxy``."""
        def api(model: Any) -> SlotApi:
            return HttpSlotApi(reactor, model.proxy, model.upstream_headers)

        return cls(config.slot_cache, reactor, api, models=config.models)

    def observe(self, observability: Any) -> None:
        """Publish events on the service's bus, count in its registry, verify restores by
        its measured responses."""
        self._publish = observability.bus.publish
        self.metrics = SlotCacheMetrics(observability.metrics.registry, self.sizes)
        observability.response_listener = self.response_seen
        observability.model_fields = self.running_fields

    # -- configuration ----------------------------------------------------------------------

    def reconfigure(self, root: SlotCacheRoot, models: Mapping[str, Any]) -> None:
        self._root = root
        self._models = models
        self._load_status()

    def enabled(self, model: Any) -> bool:
        """Whether a ``ModelConfig`` asks for the slot cache."""
        settings = getattr(model, "slot_cache", None)
        return bool(settings is not None and settings.enabled)

    def cache_dir(self, model_id: str) -> str:
        return model_cache_dir(self._root.dir, model_id)

    def sizes(self) -> dict[str, int]:
        """Bytes of each ``slotCache`` model's cache on disk (as last saved or evicted)."""
        return {m: self.status(m).bytes for m, c in self._models.items() if self.enabled(c)}

    def running_fields(self, model: Any) -> dict[str, Any]:
        """What ``/running`` shows of a model's cache (nothing for a model without one)."""
        if not self.enabled(model):
            return {}
        status = self.status(model.id)
        return {"slotCache": {"bytes": status.bytes, "tokens": status.tokens,
                              "last": status.last or None}}

    def status(self, model_id: str) -> ModelCacheStatus:
        return self._status.setdefault(model_id, ModelCacheStatus())

    def _load_status(self) -> None:
        for model_id in self._models:
            manifest = store.read_manifest(self.cache_dir(model_id))
            status = self.status(model_id)
            status.bytes = manifest.size if manifest else 0
            status.tokens = manifest.tokens if manifest else 0

    # -- hooks ------------------------------------------------------------------------------

    def before_start(self, process: Any) -> None:
        model = process.model
        if not self.enabled(model):
            self._launches.pop(model.id, None)
            return
        try:
            os.makedirs(self.cache_dir(model.id), exist_ok=True)
        except OSError as e:
            self._failed(model.id, "prepare", f"cannot create {self.cache_dir(model.id)}: {e}")
        self._launches[model.id] = _Launch(tuple(model.cmd), _stamps(model.cmd))

    def after_healthy(self, process: Any) -> Deferred[None]:
        model = process.model
        launch = self._launches.get(model.id)
        if launch is None or not self.enabled(model):
            return succeed(None)
        if model.check_endpoint is None:
            d = Deferred.fromCoroutine(self._serving_then_restore(
                model, launch, process.health_timeout))
        else:
            d = self._bounded_restore(model, launch)
        d.addErrback(self._restore_failed, model.id)
        return d

    def _bounded_restore(self, model: Any, launch: _Launch) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._restore(model, launch))
        d.addTimeout(self._root.restore_timeout, self._clock)
        return d

    async def _serving_then_restore(self, model: Any, launch: _Launch,
                                    limit: float) -> None:
        """``checkEndpoint: none``: the process only knows the server was spawned, so wait
        (at most ``limit``, the health check timeout) until llama-server's ``/health``
        answers 200 (it answers 503 while loading the model), then restore. A slot call
        before that would be refused, or answered before the slots exist."""
        began = self._clock.seconds()
        try:
            await ReadinessPoller(self._clock, self._serving_probe(model), limit).start()
        except HealthTimeout:
            raise _NotServing(f"llama-server's {_HEALTH} did not answer 200 within {limit:g}s "
                              "(checkEndpoint is none)") from None
        self.log.info("{model}: no health check: llama-server answered {path} after {ms:.0f} "
                      "ms; restoring its slot cache", model=model.id, path=_HEALTH,
                      ms=(self._clock.seconds() - began) * 1000)
        await self._bounded_restore(model, launch)

    def before_stop(self, process: Any) -> Deferred[None]:
        model = process.model
        launch = self._launches.get(model.id)
        if launch is None or not self.enabled(model):
            return succeed(None)
        d = Deferred.fromCoroutine(self._save(model, launch))
        d.addTimeout(self._root.save_timeout, self._clock)
        d.addErrback(self._save_failed, model.id)
        return d

    # -- restore ----------------------------------------------------------------------------

    async def _restore(self, model: Any, launch: _Launch) -> None:
        api = self._api_factory(model)
        began = self._clock.seconds()
        current = fingerprint(launch.cmd, launch.files, await api.props())
        launch.fingerprint = current
        directory = self.cache_dir(model.id)
        manifest = store.read_manifest(directory)
        if manifest is None:
            if store.slot_files(directory):  # left by a save that did not finish
                store.clear(directory)
            self._set_status(model.id, None)
            return
        differences = fingerprint_differences(manifest.fingerprint, current)
        if differences:
            self.log.warn("{model}: slot cache not restored, the launch changed ({what}); "
                          "removing it", model=model.id, what=", ".join(differences))
            store.clear(directory)
            self._set_status(model.id, None)
            if self.metrics:
                self.metrics.mismatches[model.id].inc()
            self._event(model.id, "mismatch", changed=differences)
            return
        present = [s for s in manifest.slots
                   if os.path.exists(os.path.join(directory, s.file))]
        results = await _each([api.restore(s.slot, s.file) for s in present])
        tokens = size = 0
        server_ms = 0.0
        for saved, result in zip(present, results, strict=True):
            if isinstance(result, SlotApiError):  # e.g. a slot count that changed: cold
                self._failed(model.id, "restore", f"slot {saved.slot}: {result}")
                continue
            tokens += _int(result.get("n_restored"))
            size += _int(result.get("n_read"))
            server_ms += _ms(result, "restore_ms")
        seconds = self._clock.seconds() - began
        if tokens <= 0:
            return
        launch.unverified = tokens
        self.log.info("{model}: slot cache restored: {tokens} tokens, {size} bytes in "
                      "{ms:.0f} ms (llama-server reading {server_ms:.0f} ms)", model=model.id,
                      tokens=tokens, size=size, ms=seconds * 1000, server_ms=server_ms)
        if self.metrics:
            self.metrics.done(model.id, "restore", tokens, size, seconds)
        self._event(model.id, "restore", tokens=tokens, bytes=size, ms=round(seconds * 1000, 1),
                    server_ms=round(server_ms, 1))

    def _restore_failed(self, failure: Failure, model_id: str) -> None | Failure:
        if failure.check(CancelledError):
            return failure  # the start itself was called off (a stop): not a cache failure
        timeout = bool(failure.check(TimeoutError, _NotServing))
        why = (f"took longer than {self._root.restore_timeout:g}s"
               if failure.check(TimeoutError) else str(failure.value) or repr(failure.value))
        self._failed(model_id, "restore", why + "; serving without the cache", timeout=timeout)
        return None

    # -- save -------------------------------------------------------------------------------

    async def _save(self, model: Any, launch: _Launch) -> None:
        api = self._api_factory(model)
        began = self._clock.seconds()
        if launch.fingerprint is None:
            launch.fingerprint = fingerprint(launch.cmd, launch.files, await api.props())
        wanted = slots_to_save(await api.slots())
        listed = self._clock.seconds()
        server_ms = 0.0
        directory = self.cache_dir(model.id)
        store.remove_file(directory, store.MANIFEST)  # the old cache is being replaced
        names = [store.slot_file_name(slot.slot) for slot in wanted]
        results = await _each([api.save(slot.slot, name) for slot, name in zip(
            wanted, names, strict=True)])
        saved: list[store.SavedSlot] = []
        for slot, name, result in zip(wanted, names, results, strict=True):
            if isinstance(result, SlotApiError):
                self._failed(model.id, "save", f"slot {slot.slot}: {result}")
                continue
            tokens, size = _int(result.get("n_saved")), _int(result.get("n_written"))
            server_ms += _ms(result, "save_ms")
            if tokens > 0:
                saved.append(store.SavedSlot(slot.slot, name, tokens, size, slot.task))
        keep = {s.file for s in saved}
        for name in store.slot_files(directory):
            if name not in keep:
                store.remove_file(directory, name)
        seconds = self._clock.seconds() - began
        if not saved:
            self._set_status(model.id, None)
            return
        manifest = store.Manifest(model.id, launch.fingerprint, self._wall_clock(), saved)
        store.write_manifest(directory, manifest)
        self._set_status(model.id, manifest)
        self.log.info("{model}: slot cache saved: {n} slot(s), {tokens} tokens, {size} bytes "
                      "in {ms:.0f} ms (GET /slots {list_ms:.0f} ms, llama-server writing "
                      "{server_ms:.0f} ms)", model=model.id, n=len(saved),
                      tokens=manifest.tokens, size=manifest.size, ms=seconds * 1000,
                      list_ms=(listed - began) * 1000, server_ms=server_ms)
        if self.metrics:
            self.metrics.done(model.id, "save", manifest.tokens, manifest.size, seconds)
        self._event(model.id, "save", slots=len(saved), tokens=manifest.tokens,
                    bytes=manifest.size, ms=round(seconds * 1000, 1),
                    server_ms=round(server_ms, 1))
        self.evict()

    def _save_failed(self, failure: Failure, model_id: str) -> None:
        timeout = bool(failure.check(TimeoutError, CancelledError))
        why = (f"took longer than {self._root.save_timeout:g}s" if timeout
               else str(failure.value) or repr(failure.value))
        self._failed(model_id, "save", why + "; stopping without it", timeout=timeout)
        store.remove_file(self.cache_dir(model_id), store.MANIFEST)

    # -- budgets ----------------------------------------------------------------------------

    def evict(self) -> None:
        """Delete the oldest slot files until every model and the whole root fit their
        budgets (``maxBytes``); a model left without slots loses its cache."""
        caches = dict(store.scan(self._root.dir))
        entries = [CacheEntry(m.model, s.slot, s.bytes, (m.saved_at, s.task))
                   for m in caches.values() for s in m.slots]
        budgets = {model_id: config.slot_cache.max_bytes
                   for model_id, config in self._models.items() if self.enabled(config)}
        evicted = choose_evictions(entries, budgets, self._root.max_bytes)
        for directory, manifest in caches.items():
            gone = {(e.model, e.slot) for e in evicted}
            drop = [s for s in manifest.slots if (manifest.model, s.slot) in gone]
            if not drop:
                continue
            for saved in drop:
                store.remove_file(directory, saved.file)
            manifest.slots = [s for s in manifest.slots if s not in drop]
            if manifest.slots:
                store.write_manifest(directory, manifest)
            else:
                store.clear(directory)
            self._set_status(manifest.model, manifest if manifest.slots else None)
            freed = sum(s.bytes for s in drop)
            self.log.info("{model}: slot cache: evicted {n} slot file(s), {size} bytes, to "
                          "keep within maxBytes", model=manifest.model, n=len(drop), size=freed)
            if self.metrics:
                self.metrics.evictions[manifest.model].inc(len(drop))
            self._event(manifest.model, "evict", slots=len(drop), bytes=freed)

    # -- verification -----------------------------------------------------------------------

    def response_seen(self, model_id: str, request_id: object, prompt_tokens: int | None,
                      cached_tokens: int | None) -> None:
        """A response of ``model_id`` finished; the first one after a restore verifies it."""
        launch = self._launches.get(model_id)
        if launch is None or not launch.unverified or prompt_tokens is None:
            return
        restored, launch.unverified = launch.unverified, 0
        helped = restore_helped(cached_tokens)
        if self.metrics:
            self.metrics.verified[model_id, "true" if helped else "false"].inc()
        line = (f"request id={request_id} model={model_id} served from a restored slot cache: "
                f"{cached_tokens or 0} of {prompt_tokens} prompt tokens cached "
                f"({restored} restored){'' if helped else ' - the restore did not help'}")
        access_log.info(literal(line), _text=line, request_id=request_id, model=model_id,
                        cached_tokens=cached_tokens, prompt_tokens=prompt_tokens)
        if not helped:
            self.log.warn("{model}: a restored slot cache was not reused by the first request "
                          "(see docs/slot-cache.md: sliding-window models need --swa-full)",
                          model=model_id)
        self._event(model_id, "verify", helped=helped, cached_tokens=cached_tokens or 0,
                    prompt_tokens=prompt_tokens, restored_tokens=restored)

    # -- reporting --------------------------------------------------------------------------

    def _set_status(self, model_id: str, manifest: store.Manifest | None) -> None:
        status = self.status(model_id)
        status.bytes = manifest.size if manifest else 0
        status.tokens = manifest.tokens if manifest else 0

    def _failed(self, model_id: str, operation: str, why: str, timeout: bool = False) -> None:
        self.log.warn("{model}: slot cache {operation} failed: {why}", model=model_id,
                      operation=operation, why=why)
        if self.metrics:
            self.metrics.failures[model_id, operation, "timeout" if timeout else "error"].inc()
        self._event(model_id, "error", operation=operation, error=why)

    def _event(self, model_id: str, action: str, **details: Any) -> None:
        payload = {"model": model_id, "action": action, **details}
        self.status(model_id).last = payload
        if self._publish is not None:
            self._publish(EVENT, payload)


def _stamps(cmd: tuple[str, ...]) -> list[FileStamp]:
    stamps = []
    for path in model_files(cmd):
        try:
            info = os.stat(path)
            stamps.append(FileStamp(os.path.abspath(path), info.st_size, info.st_mtime_ns))
        except OSError:
            stamps.append(FileStamp(os.path.abspath(path), -1, -1))
    return stamps


async def _each(calls: list[Deferred[dict[str, Any]]]) -> list[dict[str, Any] | SlotApiError]:
    """The answers of slot calls sent all at once, in order; a call llama-server refused is
    its ``SlotApiError``. llama-server runs them one after the other anyway, but nothing
    waits for a round trip between two of them. Any other failure (the server is gone, a
    cancel by the time limit) fails the whole: cancelling it cancels every call."""
    def refused(failure: Failure) -> SlotApiError:
        failure.trap(SlotApiError)
        return failure.value  # type: ignore[return-value]

    outcomes: list[Deferred[dict[str, Any] | SlotApiError]] = [
        d.addErrback(refused) for d in calls]
    try:
        return await gatherResults(outcomes, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()
        raise  # not reached: raiseException always raises


def _ms(result: dict[str, Any], key: str) -> float:
    """llama-server's own time for a save or restore (``timings.save_ms``), 0 if absent."""
    timings = result.get("timings")
    value = timings.get(key) if isinstance(timings, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
