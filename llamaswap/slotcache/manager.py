"""The slot cache's mechanism: save before a stop, restore before ready, verify, evict.

``SlotCacheManager`` is given to each ``ModelProcess`` whose model has ``slotCache`` as its
launch hooks (``llamaswap.process.LaunchHooks``):

- ``before_start``: the model's cache directory exists before its command runs (llama-server
  exits when ``--slot-save-path`` is missing) and its model files are stamped; the slot
  files of a cache that may be restored are read ahead while the model loads
  (``prefetch``).
- ``after_healthy``: runs while the model is still *starting*, so no request can reach it:
  reads ``/props``, compares fingerprints and restores the saved slots (or removes a stale
  cache), bounded by ``restoreTimeout``. It never fails a start; a failure means a cold start.
  A model without a health check gets here as soon as it is spawned: the restore first
  waits for llama-server's ``/health`` (bounded by ``healthCheckTimeout``).
- ``before_stop``: runs while the model is *stopping* (no new request is granted) and before
  any signal: saves every slot that holds tokens (all requests at once), bounded by
  ``saveTimeout``, then evicts the oldest caches beyond the budgets. It never fails or
  blocks a stop beyond its limit. Slots unchanged since the last save (or restore) of this
  launch are not saved again: after a save while idle, a stop usually saves nothing.
- ``model_idle`` (the router's idle notice): ``idleSave`` seconds after a model's last
  request finished, its changed slots are saved in the background; a stop during that
  save waits for it instead of starting another.

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

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from llamaswap.health import HealthTimeout, Probe, ReadinessPoller, http_probe
from llamaswap.logs import get_logger, literal
from llamaswap.policy import ModelState
from llamaswap.slotcache import store
from llamaswap.slotcache.client import (
    HttpSlotApi,
    SlotApi,
    SlotApiError,
    count,
    each_answer,
    timing_ms,
)
from llamaswap.slotcache.config import SlotCacheRoot, model_cache_dir
from llamaswap.slotcache.launch import (
    Launch,
    cancel_idle_timer,
    end_launch,
    end_prefetch,
    file_stamps,
    follow,
    passing,
)
from llamaswap.slotcache.metrics import IDLE_SAVE, RESTORE, SAVE, SAVE_SKIPPED, SlotCacheMetrics
from llamaswap.slotcache.policy import (
    CacheEntry,
    SlotState,
    choose_evictions,
    fingerprint,
    fingerprint_differences,
    idle_save_due,
    may_match_launch,
    plan_save,
    restore_helped,
    slot_states,
)
from llamaswap.slotcache.prefetch import Prefetcher, thread_prefetcher

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
                 serving_probe: Callable[[Any], Probe] | None = None,
                 prefetcher: Prefetcher | None = None,
                 in_flight: Callable[[str], int] | None = None) -> None:
        """``wall_clock`` dates saves: they order caches for eviction across restarts.
        ``serving_probe`` builds the probe of a model's ``/health`` (for models without a
        health check); by default an HTTP GET on ``clock``, which must then be a reactor.
        ``prefetcher`` reads slot files ahead while a model loads (None: it does not).
        ``in_flight`` counts a model's requests (the router's; None: always idle)."""
        self._root = root
        self._wall_clock = wall_clock
        self._clock = clock
        self._api_factory = api_factory
        self._models: Mapping[str, Any] = models or {}
        self._publish = publish
        self.metrics = metrics
        self._serving_probe = serving_probe or (
            lambda model: http_probe(clock, model.proxy.rstrip("/") + _HEALTH))
        self._prefetcher = prefetcher
        self.in_flight: Callable[[str], int] = in_flight or (lambda _: 0)
        self._launches: dict[str, Launch] = {}
        self._status: dict[str, ModelCacheStatus] = {}
        self._load_status()

    @classmethod
    def for_config(cls, config: Any, reactor: Any) -> SlotCacheManager:
        """The manager of a service: llama-server reached at each model's ``proxy``."""
        def api(model: Any) -> SlotApi:
            return HttpSlotApi(reactor, model.proxy, model.upstream_headers)

        return cls(config.slot_cache, reactor, api, models=config.models,
                   prefetcher=thread_prefetcher(reactor))

    def watch(self, router: Any) -> None:
        """Hear from the router when a model went idle, and ask it what is in flight."""
        self.in_flight = router.in_flight
        router.on_idle(self.model_idle)

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
        old = self._launches.get(model.id)
        if old is not None:
            end_launch(old)
        launch = Launch(tuple(model.cmd), file_stamps(model.cmd), process=process)
        self._launches[model.id] = launch
        self._start_prefetch(model.id, launch)
        # However the run ends (a stop while starting, a crash), nothing of it runs on.
        ended = process.run_ended(process.run)
        ended.addCallback(lambda _: end_launch(launch))
        ended.addErrback(lambda f: self.log.failure("{model}: slot cache: ending a launch",
                                                    f, model=model.id))

    def _start_prefetch(self, model_id: str, launch: Launch) -> None:
        """Read the slot files of a cache this launch may restore while the model loads."""
        if self._prefetcher is None:
            return
        directory = self.cache_dir(model_id)
        manifest = store.read_manifest(directory)
        if manifest is None or not may_match_launch(manifest.fingerprint, launch.cmd,
                                                    launch.files):
            return
        began = self._clock.seconds()
        d = launch.prefetch = self._prefetcher(
            [os.path.join(directory, s.file) for s in manifest.slots])

        def done(size: int) -> None:
            self.log.info("{model}: slot cache: {size} bytes of slot files read ahead in "
                          "{ms:.0f} ms while the model loads", model=model_id, size=size,
                          ms=(self._clock.seconds() - began) * 1000)

        def failed(failure: Failure) -> None:
            if not failure.check(CancelledError):
                self.log.warn("{model}: slot cache: reading the slot files ahead failed: "
                              "{why}", model=model_id, why=failure.getErrorMessage())

        d.addCallbacks(done, failed)
        d.addBoth(lambda _: setattr(launch, "prefetch", None)
                  if launch.prefetch is d else None)

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
        d.addBoth(passing(lambda: end_prefetch(launch)))
        return d

    def _bounded_restore(self, model: Any, launch: Launch) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._restore(model, launch))
        d.addTimeout(self._root.restore_timeout, self._clock)
        return d

    async def _serving_then_restore(self, model: Any, launch: Launch,
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
        cancel_idle_timer(launch)
        end_prefetch(launch)
        d = Deferred.fromCoroutine(self._stop_save(model, launch))
        d.addTimeout(self._root.save_timeout, self._clock)
        d.addErrback(self._save_failed, model.id, launch, SAVE)
        return d

    async def _stop_save(self, model: Any, launch: Launch) -> None:
        """The save before a stop; an idle save still running is waited for, not repeated
        (what it saved is then current)."""
        if launch.saving is not None:
            self.log.info("{model}: waiting for the slot cache save started while idle",
                          model=model.id)
            await follow(launch.saving)
        await self._save(model, launch, SAVE)

    # -- saves while idle -------------------------------------------------------------------

    def model_idle(self, model_id: str) -> None:
        """The router's notice that a model's last request finished: save its slots in the
        background once it has stayed idle for ``idleSave`` seconds."""
        launch = self._launches.get(model_id)
        model = self._models.get(model_id)
        if launch is None or model is None or not self.enabled(model):
            return
        cancel_idle_timer(launch)
        delay = model.slot_cache.idle_delay(self._root)
        if delay > 0:
            launch.idle_timer = self._clock.callLater(delay, self._idle_due, model_id, launch)

    def _idle_due(self, model_id: str, launch: Launch) -> None:
        launch.idle_timer = None
        model = self._models.get(model_id)
        if self._launches.get(model_id) is not launch or model is None:
            return
        process = launch.process
        ready = process is not None and process.state is ModelState.READY
        if not idle_save_due(model.slot_cache.idle_delay(self._root), ready,
                             self.in_flight(model_id), launch.saving is not None):
            return  # busy again (its next idle notice re-arms), or stopping/stopped
        d = Deferred.fromCoroutine(self._save(process.model, launch, IDLE_SAVE))
        d.addTimeout(self._root.save_timeout, self._clock)
        d.addErrback(self._save_failed, model_id, launch, IDLE_SAVE)
        launch.saving = d
        d.addBoth(lambda _: setattr(launch, "saving", None) if launch.saving is d else None)

    # -- restore ----------------------------------------------------------------------------

    async def _restore(self, model: Any, launch: Launch) -> None:
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
        results = await each_answer([api.restore(s.slot, s.file) for s in present])
        tokens = size = 0
        server_ms = 0.0
        restored: list[int] = []
        for saved, result in zip(present, results, strict=True):
            if isinstance(result, SlotApiError):  # e.g. a slot count that changed: cold
                self._failed(model.id, RESTORE, f"slot {saved.slot}: {result}")
                continue
            tokens += count(result.get("n_restored"))
            size += count(result.get("n_read"))
            server_ms += timing_ms(result, "restore_ms")
            restored.append(saved.slot)
        if restored:
            # Each slot now holds what its file does: until it changes, a stop needs no
            # save. Read before ready, so no request can have changed a slot yet.
            states = slot_states(await api.slots())
            self._made_current(launch, {slot: state for slot in restored
                                        if (state := states.get(slot)) is not None}, RESTORE)
        seconds = self._clock.seconds() - began
        if tokens <= 0:
            return
        launch.unverified = tokens
        self.log.info("{model}: slot cache restored: {tokens} tokens, {size} bytes in "
                      "{ms:.0f} ms (llama-server reading {server_ms:.0f} ms)", model=model.id,
                      tokens=tokens, size=size, ms=seconds * 1000, server_ms=server_ms)
        if self.metrics:
            self.metrics.done(model.id, RESTORE, tokens, size, seconds)
        self._event(model.id, RESTORE, tokens=tokens, bytes=size, ms=round(seconds * 1000, 1),
                    server_ms=round(server_ms, 1))

    def _restore_failed(self, failure: Failure, model_id: str) -> None | Failure:
        if failure.check(CancelledError):
            return failure  # the start itself was called off (a stop): not a cache failure
        timeout = bool(failure.check(TimeoutError, _NotServing))
        why = (f"took longer than {self._root.restore_timeout:g}s"
               if failure.check(TimeoutError) else str(failure.value) or repr(failure.value))
        self._failed(model_id, RESTORE, why + "; serving without the cache", timeout=timeout)
        return None

    # -- save -------------------------------------------------------------------------------

    async def _save(self, model: Any, launch: Launch, operation: str) -> None:
        """Save the slots that changed since their file was written (``operation``: a
        ``save`` before a stop or an ``idle_save``); a stop that finds every slot current
        saves nothing and says so."""
        api = self._api_factory(model)
        began = self._clock.seconds()
        if launch.fingerprint is None:
            launch.fingerprint = fingerprint(launch.cmd, launch.files, await api.props())
        listing = await api.slots()
        listed = self._clock.seconds()
        directory = self.cache_dir(model.id)
        manifest = store.read_manifest(directory) if launch.current else None
        if manifest is not None and manifest.fingerprint != launch.fingerprint:
            manifest = None  # not this launch's files: nothing of it is current
        on_disk = {s.slot for s in manifest.slots} if manifest else set()
        plan = plan_save(listing, {slot: state for slot, state in launch.current.items()
                                   if slot in on_disk})
        kept = [s for s in manifest.slots if s.slot in plan.current] if manifest else []
        if manifest is not None and kept and not plan.save and len(kept) == len(manifest.slots):
            self._still_current(model.id, launch, manifest, operation, listed - began)
            return
        store.remove_file(directory, store.MANIFEST)  # the old cache is being replaced
        names = [store.slot_file_name(slot.slot) for slot in plan.save]
        results = await each_answer([api.save(slot.slot, name) for slot, name in zip(
            plan.save, names, strict=True)])
        saved: list[store.SavedSlot] = []
        server_ms = 0.0
        for slot, name, result in zip(plan.save, names, results, strict=True):
            if isinstance(result, SlotApiError):
                self._failed(model.id, operation, f"slot {slot.slot}: {result}")
                continue
            tokens, size = count(result.get("n_saved")), count(result.get("n_written"))
            server_ms += timing_ms(result, "save_ms")
            if tokens > 0:
                saved.append(store.SavedSlot(slot.slot, name, tokens, size, slot.task))
        keep = {s.file for s in [*kept, *saved]}
        for name in store.slot_files(directory):
            if name not in keep:
                store.remove_file(directory, name)
        seconds = self._clock.seconds() - began
        on_file = {s.slot for s in [*kept, *saved]}
        self._made_current(launch, {slot: state for slot, state in plan.states.items()
                                    if state is not None and slot in on_file}, operation)
        if not saved and not kept:
            self._set_status(model.id, None)
            return
        manifest = store.Manifest(model.id, launch.fingerprint, self._wall_clock(),
                                  sorted([*kept, *saved], key=lambda s: s.slot))
        store.write_manifest(directory, manifest)
        self._set_status(model.id, manifest)
        size = sum(s.bytes for s in saved)
        tokens = sum(s.tokens for s in saved)
        self.log.info("{model}: slot cache saved{how}: {n} slot(s), {tokens} tokens, {size} "
                      "bytes in {ms:.0f} ms (GET /slots {list_ms:.0f} ms, llama-server writing "
                      "{server_ms:.0f} ms){unchanged}", model=model.id,
                      how=" while idle" if operation == IDLE_SAVE else "", n=len(saved),
                      tokens=tokens, size=size, ms=seconds * 1000,
                      list_ms=(listed - began) * 1000, server_ms=server_ms,
                      unchanged=f"; {len(kept)} unchanged slot(s) kept" if kept else "")
        if self.metrics:
            self.metrics.done(model.id, operation, tokens, size, seconds)
        self._event(model.id, "save", idle=operation == IDLE_SAVE, slots=len(saved),
                    tokens=manifest.tokens, bytes=manifest.size, written=size,
                    ms=round(seconds * 1000, 1), server_ms=round(server_ms, 1))
        self.evict()

    def _made_current(self, launch: Launch, states: dict[int, SlotState], by: str) -> None:
        launch.current = states
        launch.current_since = self._clock.seconds()
        launch.current_by = by

    def _still_current(self, model_id: str, launch: Launch, manifest: store.Manifest,
                       operation: str, seconds: float) -> None:
        """Every saved slot still holds what its file does: nothing to write."""
        if operation == IDLE_SAVE:
            self.log.debug("{model}: slot cache unchanged since the last save", model=model_id)
            return
        ago = self._clock.seconds() - launch.current_since
        how = {IDLE_SAVE: "saved {ago:.1f} s ago while idle",
               RESTORE: "restored {ago:.1f} s ago and unchanged since",
               SAVE: "saved {ago:.1f} s ago"}.get(launch.current_by, "saved {ago:.1f} s ago")
        self.log.info("{model}: slot cache current: " + how + " ({n} slot(s), {tokens} "
                      "tokens; GET /slots {ms:.0f} ms); nothing to save", model=model_id,
                      ago=ago, n=len(manifest.slots), tokens=manifest.tokens, ms=seconds * 1000)
        if self.metrics:
            self.metrics.done(model_id, SAVE_SKIPPED, 0, 0, seconds)
        self._event(model_id, "current", slots=len(manifest.slots), tokens=manifest.tokens,
                    bytes=manifest.size, ms=round(seconds * 1000, 1),
                    since=launch.current_by, age_s=round(ago, 1))

    def _save_failed(self, failure: Failure, model_id: str, launch: Launch,
                     operation: str) -> None:
        timeout = bool(failure.check(TimeoutError, CancelledError))
        why = (f"took longer than {self._root.save_timeout:g}s" if timeout
               else str(failure.value) or repr(failure.value))
        after = "; stopping without it" if operation == SAVE else "; a stop saves again"
        self._failed(model_id, operation, why + after, timeout=timeout)
        launch.current = {}
        if launch.saving is not None and operation == SAVE:
            launch.saving.cancel()  # the stop gave up waiting: so does the idle save
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
            launch = self._launches.get(manifest.model)
            for saved in drop:
                store.remove_file(directory, saved.file)
                if launch is not None:
                    launch.current.pop(saved.slot, None)
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
