"""The decision loop: admits requests, asks the policy what may proceed, carries it out.

All of its state is touched only on the reactor thread, so there are no locks: every event
(a request arrives or leaves, a swap ends, a request finishes, a model changes state, a hold
or TTL runs out) updates the state and re-runs ``policy.plan`` over the queue.

The tickets, leases and errors it hands out are in ``tickets.py``; its TTL, failure, hang
and liveness timers in ``watch.py`` (``ModelWatch``, which it tells what happens to each
model). The names they define are importable from here too.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from llamaswap.config import Config, ModelConfig
from llamaswap.logs import get_logger
from llamaswap.policy import (
    Join,
    ModelState,
    Pending,
    Plan,
    Snapshot,
    StartSwap,
    Unplaceable,
    lone_grant,
    may_admit,
    plan,
)
from llamaswap.process import ModelProcess, StartAborted, StartError
from llamaswap.reload import ConfigDiff
from llamaswap.tickets import (
    COST_SMOOTHING,
    CircuitOpen,
    ConcurrencyLimitExceeded,
    Lease,
    ModelUnloaded,
    QueueTimeout,
    Rejected,
    ShuttingDown,
    Swap,
    SwapCosts,
    Ticket,
    WaitFailed,
)
from llamaswap.watch import LIVENESS_MISSES, ModelWatch

__all__ = ["COST_SMOOTHING", "LIVENESS_MISSES", "CircuitOpen", "ConcurrencyLimitExceeded",
           "Lease", "ModelUnloaded", "QueueTimeout", "Rejected", "Router", "ShuttingDown",
           "SwapCosts", "Ticket", "WaitFailed"]


class Router:
    """Owns the queue, active swaps, in-flight counts, timers and learnt swap costs."""

    log = get_logger()

    def __init__(self, config: Config, processes: dict[str, ModelProcess],
                 clock: IReactorTime) -> None:
        self._config = config
        self._processes = processes
        self._clock = clock
        self._ids = itertools.count(1)
        self._queue: list[Ticket] = []
        self._swaps: dict[str, Swap] = {}
        self._in_flight: Counter[str] = Counter()
        self._reserved: Counter[str] = Counter()
        self._ready_since: dict[str, float] = {}
        self._last_done: dict[str, float] = {}
        self._last_used: dict[str, float] = {}
        self._returning: set[str] = set()
        self._retiring: dict[str, ModelProcess | None] = {}
        self._retire_started: set[str] = set()
        self.costs: dict[str, SwapCosts] = {m: SwapCosts() for m in processes}
        self._wake: IDelayedCall | None = None
        self._idle_waiters: list[Deferred[None]] = []
        self._lone: dict[str, bool] = {}
        """``lone_grant`` per model, for the current config and model states: it depends on
        nothing else, so it is forgotten whenever either changes (``_forget_lone``)."""
        self._swap_listeners: list[Callable[[str, frozenset[str]], None]] = []
        self._stop_listeners: list[Callable[[str, str], None]] = []
        self._idle_listeners: list[Callable[[str], None]] = []
        self._closing = False
        self._draining = False
        self._drain_again = False
        self.watch = ModelWatch(clock, self.log, processes=processes,
                                in_flight=self._in_flight, swaps=self._swaps,
                                closing=lambda: self._closing, model_config=self._model_config,
                                stop=self._stop, fail_waiters_for=self._fail_waiters_for,
                                bug=self._bug)
        """The TTL, failure, hang and liveness timers (``watch.py``)."""
        for process in processes.values():
            process.add_observer(self._state_changed)

    # -- requests ---------------------------------------------------------------------------

    def enqueue(self, model: str, *, path: str = "", access_id: int | None = None) -> Ticket:
        """Admit a request for ``model``; its ``deferred`` fires with a ``Lease`` when ready.

        ``path`` and ``access_id`` only label the ticket for ``waiting()``'s readers.

        The deferred fails at once with ``Rejected`` or ``ShuttingDown``; later with the
        model's start error or a ``WaitFailed``. Cancelling it withdraws the request (a load
        others need goes on).
        """
        now = self._clock.seconds()
        ticket = Ticket(next(self._ids), model, now, path=path, access_id=access_id)
        if self._closing:
            ticket.deferred = fail(ShuttingDown("llamaswap is shutting down"))
            return ticket
        circuit = self.watch.circuit(model)
        if circuit is not None:
            ticket.deferred = fail(circuit)
            return ticket
        waiting = self._waiting()
        waiting_here = sum(1 for t in waiting if t.model == model)
        refusal = may_admit(self._config, model, self._reserved[model], waiting_here,
                            len(waiting))
        if refusal is not None:
            if "concurrencyLimit" in refusal:  # llama-swap's answer: try again in a second
                ticket.deferred = fail(Rejected(refusal, "concurrency_limit", retry_after=1.0))
            else:
                ticket.deferred = fail(Rejected(refusal, "queue_full",
                                                retry_after=max(1.0, self._eta(model))))
            return ticket
        self._reserved[model] += 1
        if model in self._last_done:  # did its last client come back within the hold time?
            if now - self._last_done[model] < self._config.scheduler.hold_time:
                self._returning.add(model)
            else:
                self._returning.discard(model)
        ticket.router = self
        ticket.deferred = Deferred(lambda _: self._withdraw(ticket))
        if (not self._queue and not self._swaps and model not in self._retiring
                and self._lone_grant(model)):
            self._grant(ticket)  # what plan() would decide, without building a snapshot
            return ticket
        timeout = self._config.scheduler.queue_timeout
        if timeout > 0:
            ticket.timeout = self._clock.callLater(timeout, self._timed_out, ticket)
        self._queue.append(ticket)
        self._drain()
        return ticket

    def _lone_grant(self, model: str) -> bool:
        lone = self._lone.get(model)
        if lone is None:
            lone = self._lone[model] = lone_grant(
                self._config, model, {m: p.state for m, p in self._processes.items()})
        return lone

    def _forget_lone(self) -> None:
        self._lone.clear()

    def acquire(self, model: str) -> Deferred[Lease]:
        return self.enqueue(model).deferred

    @property
    def hangs(self) -> Counter[str]:
        """How many times each model was declared hung (for metrics)."""
        return self.watch.hangs

    def in_flight(self, model: str) -> int:
        return self._in_flight[model]

    def circuit_open(self, model: str) -> bool:
        """Whether ``model`` failed ``maxFailures`` times within ``failureWindow``: it is not
        started again until the window passes or an operator unloads it."""
        return self.watch.circuit_open(model)

    def queued(self) -> int:
        return len(self._waiting())

    def on_stop(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(model, reason)`` just before a running model is stopped; reasons:
        request (evicted by a swap), ttl, manual, shutdown, reload, hung, abandoned."""
        self._stop_listeners.append(listener)

    def on_idle(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(model)`` whenever a model's last request in flight finished."""
        self._idle_listeners.append(listener)

    def on_swap(self, listener: Callable[[str, frozenset[str]], None]) -> None:
        """Call ``listener(target, evicted)`` whenever a swap starts (for metrics and events)."""
        self._swap_listeners.append(listener)

    def waiting(self) -> list[Ticket]:
        """The requests not yet granted: those whose model loads first (position 0), then
        the queue in order (positions 1, 2, ...)."""
        return [t for s in self._swaps.values() for t in s.waiters] + self._queue

    def _waiting(self) -> list[Ticket]:
        return self._queue + [t for s in self._swaps.values() for t in s.waiters]

    def position(self, ticket: Ticket) -> int:
        return self._queue.index(ticket) + 1 if ticket in self._queue else 0

    def eta(self, ticket: Ticket) -> float:
        if ticket in self._queue:
            return self._eta(ticket.model)
        swap = self._swaps.get(ticket.model)
        if swap is not None:
            return self._swap_remaining(ticket.model, swap)
        return 0.0

    def _eta(self, model: str) -> float:
        """Rough wait for a queued request: active swaps finishing, one unload and its load.

        Learnt averages where there are some; a tenth of ``healthCheckTimeout`` otherwise.
        """
        pending = max((self._swap_remaining(m, s) for m, s in self._swaps.items()), default=0.0)
        if self._processes[model].state is ModelState.READY:
            return pending
        unload = max((c.unload or 0.0 for c in self.costs.values()), default=0.0)
        load = self.costs[model].load or self._config.health_check_timeout / 10
        return pending + unload + load

    def _swap_remaining(self, model: str, swap: Swap) -> float:
        now = self._clock.seconds()
        load = self.costs[model].load or self._config.health_check_timeout / 10
        started = swap.loading_since if swap.loading_since is not None else now
        unload = 0.0 if swap.loading_since is not None else max(
            (self.costs[m].unload or 0.0 for m in swap.evict), default=0.0)
        return max(0.0, unload + load - (now - started))

    def _withdraw(self, ticket: Ticket) -> None:
        self._forget(ticket)
        swap = self._swaps.get(ticket.model)
        if (swap is not None and not swap.waiters and self._config.scheduler.abandon_unneeded_loads
                and not self._in_flight[ticket.model]):
            self.log.info("{model}: nobody waits for this load any more; abandoning it",
                          model=ticket.model)
            self._stop(ticket.model, reason="abandoned").addErrback(self._bug, "abandon")

    def _forget(self, ticket: Ticket) -> None:
        """Take ``ticket`` out of the queue or its swap and give back its reservation."""
        if ticket in self._queue:
            self._queue.remove(ticket)
        for swap in self._swaps.values():
            if ticket in swap.waiters:
                swap.waiters.remove(ticket)
        if ticket.timeout is not None and ticket.timeout.active():
            ticket.timeout.cancel()
        ticket.timeout = None
        ticket.router = None
        self._reserved[ticket.model] -= 1

    def _fail(self, ticket: Ticket, error: Exception | Failure) -> None:
        self._forget(ticket)
        ticket.deferred.errback(error if isinstance(error, Failure) else Failure(error))

    def _timed_out(self, ticket: Ticket) -> None:
        ticket.timeout = None
        waited = self._clock.seconds() - ticket.arrived
        self.log.warn("{model}: request waited {waited:.0f}s without its model; giving up",
                      model=ticket.model, waited=waited)
        self._fail(ticket, QueueTimeout(
            f"model {ticket.model} was not available within {waited:.0f}s "
            "(routing.scheduler.queueTimeout)", "queue_timeout",
            retry_after=max(1.0, self.eta(ticket))))
        self._drain()

    def _released(self, model: str) -> None:
        now = self._clock.seconds()
        self._in_flight[model] -= 1
        self._reserved[model] -= 1
        self._last_done[model] = now
        self._last_used[model] = now
        if self._in_flight[model] == 0:
            self.watch.idle(model)
            self._maybe_retire(model)
            for listener in self._idle_listeners:
                listener(model)
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
            queue=tuple(Pending(t.request_id, t.model, t.arrived) for t in self._queue),
            now=self._clock.seconds(),
            ready_since=dict(self._ready_since),
            last_done=dict(self._last_done),
            last_used=dict(self._last_used),
            load_cost={m: c.load or 0.0 for m, c in self.costs.items()},
            not_before=self.watch.not_before(),
            draining=frozenset(self._retiring),
            returning=frozenset(self._returning),
        )

    def _drain(self) -> None:
        """Apply the policy's plan. Re-entrant calls (a grant that finishes at once) are
        folded into another pass instead of acting on a stale plan."""
        if self._draining:
            self._drain_again = True
            return
        if not self._queue:  # plan() only decides for waiting requests
            self._schedule_wake(None)
            return
        self._draining = True
        try:
            self._drain_again = True
            while self._drain_again:
                self._drain_again = False
                self._apply(plan(self._config, self._snapshot()))
        finally:
            self._draining = False

    def _apply(self, decided: Plan) -> None:
        self._schedule_wake(decided.wake_at)
        by_id = {t.request_id: t for t in self._queue}
        started: list[str] = []
        for decision in decided.decisions:
            if isinstance(decision, StartSwap):
                self._swaps[decision.model] = Swap(decision.evict, self._clock.seconds())
                started.append(decision.model)
                continue
            ticket = by_id[decision.request_id]
            if ticket not in self._queue:
                continue  # withdrawn by something a previous decision set off
            if isinstance(decision, Join):
                self._queue.remove(ticket)
                self._swaps[decision.model].waiters.append(ticket)
            elif isinstance(decision, Unplaceable):
                self._fail(ticket, WaitFailed(decision.reason, "model_does_not_fit"))
            else:
                self._queue.remove(ticket)
                self._grant(ticket)
        for model in started:  # after the joins: a swap may complete synchronously
            swap = self._swaps[model]
            for listener in self._swap_listeners:
                listener(model, swap.evict)
            Deferred.fromCoroutine(self._run_swap(model)).addErrback(self._bug, "swap")

    def _schedule_wake(self, at: float | None) -> None:
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        if at is not None:
            self._wake = self._clock.callLater(max(0.0, at - self._clock.seconds()),
                                               self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._drain()

    def _grant(self, ticket: Ticket) -> None:
        model = ticket.model
        if ticket.timeout is not None and ticket.timeout.active():
            ticket.timeout.cancel()
        ticket.timeout = None
        ticket.router = None
        self._in_flight[model] += 1
        self._last_used[model] = self._clock.seconds()
        self.watch.busy(model)
        ticket.deferred.callback(Lease(self, self.watch, model, self._processes[model]))

    async def _run_swap(self, target: str) -> None:
        swap = self._swaps[target]
        error: Failure | None = None
        try:
            if swap.evict:
                self.log.info("swap: stopping {evict} to start {model}",
                              evict=", ".join(sorted(swap.evict)), model=target)
                await gatherResults([self._stop(m, reason="request")
                                     for m in sorted(swap.evict)], consumeErrors=True)
            swap.loading_since = self._clock.seconds()
            cold = self._processes[target].state is not ModelState.READY
            await self._processes[target].ensure_ready()
            if cold:
                self.costs[target].record("load", self._clock.seconds() - swap.loading_since)
        except Exception:
            error = Failure()
        del self._swaps[target]
        for ticket in list(swap.waiters):
            if error is None and self._processes[target].state is ModelState.READY:
                swap.waiters.remove(ticket)
                self._grant(ticket)
            else:
                self._fail(ticket, error or Failure(ModelUnloaded(
                    f"model {target} stopped before the request could be served")))
        if error is not None and error.check(StartError) and not error.check(StartAborted):
            self.watch.record_failure(target, error.getErrorMessage())  # after its waiters heard
        self._maybe_retire(target)
        self._drain()

    def _stop(self, model: str, timeout: float | None = None,
              reason: str = "manual") -> Deferred[None]:
        """Stop ``model``, learning how long an unload takes when it really had to stop."""
        process = self._processes[model]
        if process.state is ModelState.STOPPED:
            return succeed(None)
        if process.state is not ModelState.STOPPING:
            for listener in self._stop_listeners:
                listener(model, reason)
        began = self._clock.seconds()
        d = process.stop(timeout)
        d.addCallback(lambda _: self.costs[model].record("unload", self._clock.seconds() - began))
        return d

    def _state_changed(self, process: ModelProcess, old: ModelState, new: ModelState) -> None:
        self._forget_lone()
        model = process.model.id
        if new is ModelState.READY:
            self._ready_since[model] = self._clock.seconds()
            self.watch.ready(model)
        elif new is ModelState.STOPPED:
            self._ready_since.pop(model, None)
            self.watch.stopped(model)
            if old is ModelState.READY:  # it exited by itself: a crash
                self.watch.record_failure(model, process.last_error or "exited unexpectedly")
        if new in (ModelState.STOPPED, ModelState.READY):
            self._drain()

    # -- reload -----------------------------------------------------------------------------

    def _model_config(self, model: str) -> ModelConfig:
        """A model's settings; a model a reload removed keeps its old ones while it drains."""
        config = self._config.models.get(model)
        return config if config is not None else self._processes[model].model

    def reconfigure(self, config: Config, diff: ConfigDiff,
                    make_process: Callable[[str], ModelProcess]) -> None:
        """Adopt ``config`` without cutting anything off (see ``llamaswap.reload``).

        ``make_process(model_id)`` builds the process for a new or relaunched model.
        """
        self._config = config
        self._forget_lone()
        for model in diff.added:
            self._adopt(model, make_process(model))
        for model in (*diff.unchanged, *diff.updated):
            self._processes[model].reconfigure(config.models[model],
                                               config.health_check_timeout)
            self.watch.reconfigured(model)
        for model in diff.restart:
            self._retiring[model] = make_process(model)
            self._maybe_retire(model)
        for model in diff.removed:
            self._retiring[model] = None
            self._fail_waiters_for(model, ModelUnloaded(
                f"model {model} was removed from the configuration"))
            self._maybe_retire(model)
        self._drain()

    def _adopt(self, model: str, process: ModelProcess) -> None:
        self._forget_lone()
        self._processes[model] = process
        process.add_observer(self._state_changed)
        self.costs.setdefault(model, SwapCosts())
        self.watch.adopt(model)

    def _maybe_retire(self, model: str) -> None:
        """Once a replaced or removed model is idle, stop its old process and move on."""
        if (model not in self._retiring or model in self._retire_started
                or self._in_flight[model] or model in self._swaps):
            return
        self._retire_started.add(model)
        self.log.info("{model}: reload: stopping the old process", model=model)
        d = self._stop(model, reason="reload")
        d.addCallback(lambda _: self._retired(model))
        d.addErrback(self._bug, "retire")

    def _retired(self, model: str) -> None:
        self._retire_started.discard(model)
        replacement = self._retiring.pop(model, None)
        if replacement is not None:
            self._adopt(model, replacement)
        else:
            self._forget_lone()
            del self._processes[model]
            self.costs.pop(model, None)
            self.watch.forget(model)
            for times in (self._ready_since, self._last_done, self._last_used):
                times.pop(model, None)
        self._drain()

    # -- unload and shutdown ----------------------------------------------------------------

    def unload(self, models: Iterable[str] | None = None) -> Deferred[None]:
        """Stop ``models`` (default: all) now, each with its ``unloadTimeout``.

        Requests waiting for them fail; requests in flight on them are cut off (this is an
        operator's explicit order, as in llama-swap).
        """
        targets = sorted(self._processes if models is None else set(models))
        for model in targets:
            self.watch.clear_failures(model)
            self._fail_waiters_for(model, ModelUnloaded(f"model {model} was unloaded"))
        return Deferred.fromCoroutine(self._stop_all(targets))

    async def _stop_all(self, models: list[str]) -> None:
        await gatherResults([self._stop(m) for m in models], consumeErrors=True)

    def _fail_waiters_for(self, model: str | None, error: Exception) -> None:
        for ticket in [t for t in self._waiting() if model is None or t.model == model]:
            self._fail(ticket, error)

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
        self._schedule_wake(None)
        self.watch.close()
        self._fail_waiters_for(None, ShuttingDown("llamaswap is shutting down"))
        idle = self.when_idle()
        idle.addTimeout(drain_timeout, self._clock)
        try:
            await idle
        except Exception:
            self.log.warn("shutdown: requests still in flight after {t:g}s; stopping anyway",
                          t=drain_timeout)
        results = await DeferredList([self._stop(m, reason="shutdown")
                                      for m in list(self._processes)], consumeErrors=True)
        for ok, failure in results:
            if not ok:
                self.log.failure("shutdown: a model did not stop cleanly", failure)

    def _bug(self, failure: Failure, what: str) -> None:
        self.log.failure("unexpected error in {what}", failure, what=what)
