"""The decision loop: admits requests, asks the policy what may proceed, carries it out.

All of its state is touched only on the reactor thread, so there are no locks: every event
(a request arrives or leaves, a swap ends, a request finishes, a model changes state, a TTL
fires) updates the state and re-runs ``policy.plan`` over the queue.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from llamaswap.config import Config
from llamaswap.logs import get_logger
from llamaswap.policy import Grant, Join, ModelState, Pending, Snapshot, StartSwap, may_admit, plan
from llamaswap.process import ModelProcess


class ConcurrencyLimitExceeded(Exception):
    def __init__(self, model: str, limit: int) -> None:
        super().__init__(f"too many requests for model {model} (concurrencyLimit {limit})")


class ModelUnloaded(Exception):
    """The model was unloaded while this request waited for it."""


class ShuttingDown(Exception):
    """llamaswap is stopping and takes no new work."""


class Lease:
    """Permission to send one request to a ready model; ``release()`` when it is done."""

    def __init__(self, router: Router, model: str, process: ModelProcess) -> None:
        self.model = model
        self.process = process
        self._router: Router | None = router

    def release(self) -> None:
        router, self._router = self._router, None
        if router is not None:
            router._released(self.model)


@dataclass(eq=False)
class _Waiting:
    request_id: int
    model: str
    deferred: Deferred[Lease] = field(default_factory=Deferred)


@dataclass(eq=False)
class _Swap:
    evict: frozenset[str]
    waiters: list[_Waiting] = field(default_factory=list)


class Router:
    """Owns the queue, active swaps, in-flight counts and TTL timers for the local models."""

    log = get_logger()

    def __init__(self, config: Config, processes: Mapping[str, ModelProcess],
                 clock: IReactorTime) -> None:
        self._config = config
        self._processes = processes
        self._clock = clock
        self._ids = itertools.count(1)
        self._queue: list[_Waiting] = []
        self._swaps: dict[str, _Swap] = {}
        self._in_flight: Counter[str] = Counter()
        self._reserved: Counter[str] = Counter()
        self._ttl_timers: dict[str, IDelayedCall] = {}
        self._idle_waiters: list[Deferred[None]] = []
        self._closing = False
        self._draining = False
        self._drain_again = False
        for process in processes.values():
            process.add_observer(self._state_changed)

    # -- requests ---------------------------------------------------------------------------

    def acquire(self, model: str) -> Deferred[Lease]:
        """Fire with a ``Lease`` once ``model`` is ready for this request.

        Fails at once with ``ConcurrencyLimitExceeded`` or ``ShuttingDown``; later with the
        model's start error. Cancelling withdraws the request (a start others need goes on).
        """
        if self._closing:
            return fail(ShuttingDown("llamaswap is shutting down"))
        if not may_admit(self._config, model, self._reserved[model]):
            limit = self._config.models[model].concurrency_limit
            return fail(ConcurrencyLimitExceeded(model, limit))
        self._reserved[model] += 1
        waiting = _Waiting(next(self._ids), model)
        waiting.deferred = Deferred(lambda _: self._withdraw(waiting))
        self._queue.append(waiting)
        self._drain()
        return waiting.deferred

    def in_flight(self, model: str) -> int:
        return self._in_flight[model]

    def queued(self) -> int:
        return len(self._queue) + sum(len(s.waiters) for s in self._swaps.values())

    def _withdraw(self, waiting: _Waiting) -> None:
        if waiting in self._queue:
            self._queue.remove(waiting)
        for swap in self._swaps.values():
            if waiting in swap.waiters:
                swap.waiters.remove(waiting)
        self._reserved[waiting.model] -= 1

    def _released(self, model: str) -> None:
        self._in_flight[model] -= 1
        self._reserved[model] -= 1
        if self._in_flight[model] == 0:
            self._arm_ttl(model)
        if not any(self._in_flight.values()):
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        self._drain()

    # -- the loop ---------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            states={m: p.state for m, p in self._processes.items()},
            in_flight=dict(self._in_flight),
            swaps={m: s.evict for m, s in self._swaps.items()},
            queue=tuple(Pending(w.request_id, w.model) for w in self._queue),
        )

    def _drain(self) -> None:
        """Apply the policy's plan. Re-entrant calls (a grant that finishes at once) are
        folded into another pass instead of acting on a stale plan."""
        if self._draining:
            self._drain_again = True
            return
        self._draining = True
        try:
            self._drain_again = True
            while self._drain_again:
                self._drain_again = False
                self._apply(plan(self._config, self._snapshot()))
        finally:
            self._draining = False

    def _apply(self, decisions: Iterable[Grant | Join | StartSwap]) -> None:
        by_id = {w.request_id: w for w in self._queue}
        started: list[str] = []
        for decision in decisions:
            if isinstance(decision, StartSwap):
                self._swaps[decision.model] = _Swap(decision.evict)
                started.append(decision.model)
                continue
            waiting = by_id[decision.request_id]
            if waiting not in self._queue:
                continue  # withdrawn by something a previous decision set off
            self._queue.remove(waiting)
            if isinstance(decision, Join):
                self._swaps[decision.model].waiters.append(waiting)
            else:
                self._grant(waiting)
        for model in started:  # after the joins: a swap may complete synchronously
            Deferred.fromCoroutine(self._run_swap(model)).addErrback(self._bug, "swap")

    def _grant(self, waiting: _Waiting) -> None:
        model = waiting.model
        self._in_flight[model] += 1
        self._cancel_ttl(model)
        waiting.deferred.callback(Lease(self, model, self._processes[model]))

    async def _run_swap(self, target: str) -> None:
        swap = self._swaps[target]
        error: Failure | None = None
        try:
            if swap.evict:
                self.log.info("swap: stopping {evict} to start {model}",
                              evict=", ".join(sorted(swap.evict)), model=target)
                await gatherResults([self._processes[m].stop() for m in sorted(swap.evict)],
                                    consumeErrors=True)
            await self._processes[target].ensure_ready()
        except Exception:
            error = Failure()
        del self._swaps[target]
        for waiting in swap.waiters:
            if error is None and self._processes[target].state is ModelState.READY:
                self._grant(waiting)
            else:
                self._reserved[waiting.model] -= 1
                waiting.deferred.errback(error or Failure(ModelUnloaded(
                    f"model {target} stopped before the request could be served")))
        self._drain()

    def _state_changed(self, process: ModelProcess, old: ModelState, new: ModelState) -> None:
        model = process.model.id
        if new is ModelState.STOPPED:
            self._cancel_ttl(model)
        elif new is ModelState.READY:
            self._arm_ttl(model)
        if new in (ModelState.STOPPED, ModelState.READY):
            self._drain()

    # -- TTL --------------------------------------------------------------------------------

    def _arm_ttl(self, model: str) -> None:
        ttl = self._config.models[model].ttl
        if ttl <= 0 or self._in_flight[model] or self._closing:
            return
        if self._processes[model].state is not ModelState.READY:
            return
        self._cancel_ttl(model)
        self._ttl_timers[model] = self._clock.callLater(ttl, self._ttl_expired, model)

    def _cancel_ttl(self, model: str) -> None:
        timer = self._ttl_timers.pop(model, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _ttl_expired(self, model: str) -> None:
        self._ttl_timers.pop(model, None)
        if self._in_flight[model] or model in self._swaps:
            return
        if self._processes[model].state is not ModelState.READY:
            return
        self.log.info("{model}: unloading after TTL of {ttl:g}s", model=model,
                      ttl=self._config.models[model].ttl)
        self._processes[model].stop().addErrback(self._bug, "ttl stop")

    # -- unload and shutdown ----------------------------------------------------------------

    def unload(self, models: Iterable[str] | None = None) -> Deferred[None]:
        """Stop ``models`` (default: all) now, each with its ``unloadTimeout``.

        Requests waiting for them fail; requests in flight on them are cut off (this is an
        operator's explicit order, as in llama-swap).
        """
        targets = sorted(self._processes if models is None else set(models))
        for model in targets:
            self._fail_waiters_for(model, ModelUnloaded(f"model {model} was unloaded"))
        return Deferred.fromCoroutine(self._stop_all(targets))

    async def _stop_all(self, models: list[str]) -> None:
        await gatherResults([self._processes[m].stop() for m in models], consumeErrors=True)

    def _fail_waiters_for(self, model: str | None, error: Exception) -> None:
        doomed = [w for w in self._queue if model is None or w.model == model]
        for target, swap in self._swaps.items():
            if model is None or target == model:
                doomed.extend(swap.waiters)
                swap.waiters.clear()
        for waiting in doomed:
            if waiting in self._queue:
                self._queue.remove(waiting)
            self._reserved[waiting.model] -= 1
            waiting.deferred.errback(Failure(error))

    def when_idle(self) -> Deferred[None]:
        """Fire when no request is in flight on any model."""
        if not any(self._in_flight.values()):
            return succeed(None)
        d: Deferred[None] = Deferred(self._idle_waiters.remove)
        self._idle_waiters.append(d)
        return d

    async def shutdown(self, drain_timeout: float) -> None:
        """Refuse new work, let requests in flight finish (bounded), then stop every model."""
        self._closing = True
        for model in list(self._ttl_timers):
            self._cancel_ttl(model)
        self._fail_waiters_for(None, ShuttingDown("llamaswap is shutting down"))
        idle = self.when_idle()
        idle.addTimeout(drain_timeout, self._clock)
        try:
            await idle
        except Exception:
            self.log.warn("shutdown: requests still in flight after {t:g}s; stopping anyway",
                          t=drain_timeout)
        results = await DeferredList([p.stop() for p in self._processes.values()],
                                     consumeErrors=True)
        for ok, failure in results:
            if not ok:
                self.log.failure("shutdown: a model did not stop cleanly", failure)

    def _bug(self, failure: Failure, what: str) -> None:
        self.log.failure("unexpected error in {what}", failure, what=what)
