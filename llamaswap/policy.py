"""Which models to start and stop, and which waiting requests may go ahead.

Pure functions of the configuration and a snapshot of the world: no reactor, no I/O, no
mutation. The router (``router.py``) feeds them snapshots and carries out what they return.

Two policies share one decision procedure (``plan``):

- ``fifo`` is llama-swap's scheduler: requests for a ready model go straight
  through, a swap waits only for its victims' requests in flight, in priority then arrival order.
- ``swapaware`` (the default) adds three rules so that interleaved requests for different models
  stop causing a swap each. A model that just finished a request is *held* for ``holdTime`` (an
  agent's pause between tool calls does not cost a reload); a resident model keeps serving its
  own requests for up to ``batchTime`` while others wait; and a request waiting ``maxAge`` is
  *due*: new requests for the models it must evict are held back until it has been served.

What may run together comes from the groups, the matrix (``matrix.py``) and, when ``resources``
are declared, a budget: the fewest, least recently used, cheapest-to-reload idle models are
evicted to make room.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from llamaswap.config import Config


class ModelState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Pending:
    """A request admitted but not yet served."""

    request_id: int
    model: str
    arrived: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    """What the policy may look at. Missing models count as stopped, idle and never used."""

    states: Mapping[str, ModelState] = field(default_factory=dict)
    in_flight: Mapping[str, int] = field(default_factory=dict)
    """Requests granted and not yet finished, per model."""
    swaps: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Active swaps: target model -> the models that swap is evicting."""
    queue: tuple[Pending, ...] = ()
    """Waiting requests in arrival order."""
    now: float = 0.0
    ready_since: Mapping[str, float] = field(default_factory=dict)
    """When each resident model became ready: the start of its turn."""
    last_done: Mapping[str, float] = field(default_factory=dict)
    """When each model last finished a request (its hold counts from here)."""
    last_used: Mapping[str, float] = field(default_factory=dict)
    """When each model last started or finished a request (least recently used goes first)."""
    load_cost: Mapping[str, float] = field(default_factory=dict)
    """Learnt seconds to bring each model up again (a tie-breaker when choosing victims)."""
    not_before: Mapping[str, float] = field(default_factory=dict)
    """A model that failed recently may not be started again before this time (backoff)."""
    draining: frozenset[str] = frozenset()
    """Models being replaced after a reload: no new work until their old process is gone."""
    returning: frozenset[str] = frozenset()
    """Models whose latest request arrived within ``holdTime`` of the one before finishing:
    their clients come back, so holding them is worth it. A model whose requests came all at
    once (a burst) is not held: nobody would come back."""

    def state(self, model: str) -> ModelState:
        return self.states.get(model, ModelState.STOPPED)


@dataclass(frozen=True)
class Grant:
    """Serve this request now on its (ready) model."""

    request_id: int
    model: str


@dataclass(frozen=True)
class Join:
    """Attach this request to the active swap that is loading its model."""

    request_id: int
    model: str


@dataclass(frozen=True)
class StartSwap:
    """Stop ``evict`` (all at once), then start ``model``."""

    model: str
    evict: frozenset[str]


@dataclass(frozen=True)
class Unplaceable:
    """This request's model cannot fit beside models that may never be evicted: fail it."""

    request_id: int
    model: str
    reason: str


Decision = Grant | Join | StartSwap | Unplaceable


@dataclass(frozen=True)
class Plan:
    decisions: list[Decision]
    wake_at: float | None = None
    """Re-plan at this time even if nothing else happens (a hold or a turn runs out)."""


def may_admit(config: Config, model: str, reserved: int, waiting_for_model: int = 0,
              waiting_total: int = 0) -> str | None:
    """``None`` if one more request for ``model`` may enter, else why not (answered with 429).

    ``reserved`` counts the model's requests anywhere in the system (llama-swap's
    ``concurrencyLimit`` semantics); the waiting counts cover requests not yet being served.
    """
    limits = config.models[model]
    if reserved >= limits.concurrency_limit:
        return f"too many requests for model {model} (concurrencyLimit {limits.concurrency_limit})"
    if limits.max_queue and waiting_for_model >= limits.max_queue:
        return f"too many requests waiting for model {model} (maxQueue {limits.max_queue})"
    limit = config.scheduler.max_queue
    if limit and waiting_total >= limit:
        return f"too many requests waiting (routing.scheduler.maxQueue {limit})"
    return None


def running_models(snapshot: Snapshot) -> frozenset[str]:
    """Models occupying resources: anything not stopped, plus the targets of active swaps."""
    active = {m for m, s in snapshot.states.items() if s is not ModelState.STOPPED}
    return frozenset(active | set(snapshot.swaps))


def eviction_for(config: Config, target: str, running: Iterable[str],
                 snapshot: Snapshot | None = None) -> frozenset[str] | None:
    """The running models that loading ``target`` must stop; ``None`` if it can never fit.

    Groups (or the matrix) decide first; then, with a resource budget, idle models are added
    until ``target`` fits. ``None`` means even evicting everything evictable is not enough.
    """
    running = frozenset(running) - {target}
    if config.matrix is not None:
        evict = config.matrix.solve(target, running)
    else:
        evict = _group_eviction(config, target, running)
    if not config.capacities:
        return evict
    extra = _budget_eviction(config, target, running - evict, snapshot or Snapshot())
    return None if extra is None else evict | extra


def _group_eviction(config: Config, target: str, running: frozenset[str]) -> frozenset[str]:
    """llama-swap's group swapper: same ``swap: true`` group, or other non-persistent groups
    when the target's group is ``exclusive`` (so a non-exclusive target never evicts an
    exclusive group: kept on purpose for compatibility)."""
    target_group = config.group_of(target)
    evict = set()
    for model in running:
        if model not in config.models:  # removed by a reload, still draining: in the way
            if target_group.exclusive:
                evict.add(model)
            continue
        group = config.group_of(model)
        if group.id == target_group.id:
            if target_group.swap:
                evict.add(model)
        elif target_group.exclusive and not group.persistent:
            evict.add(model)
    return frozenset(evict)


def eviction_cause(config: Config, target: str, victim: str) -> str:
    """Why loading ``target`` stops ``victim``, for the reason events give: ``"group"`` (one
    swap group), ``"exclusive"`` (``target``'s group is exclusive), ``"matrix"`` (no set holds
    both), ``"removed"`` (a reload removed it) or ``"resources"`` (the budget).

    With both a matrix and a budget, the pair is judged alone: a victim the matrix admits
    beside ``target`` but not beside the others too is reported as ``"resources"``.
    """
    if victim not in config.models:
        return "removed"
    if config.matrix is not None:
        if not config.capacities or victim in config.matrix.solve(target, (victim,)):
            return "matrix"
    elif _group_eviction(config, target, frozenset({victim})):
        same = config.group_of(target).id == config.group_of(victim).id
        return "group" if same else "exclusive"
    return "resources"


def _budget_eviction(config: Config, target: str, kept: frozenset[str],
                     snapshot: Snapshot) -> frozenset[str] | None:
    """The fewest models among ``kept`` to stop so ``target`` fits the capacities.

    Among equally few: idle before busy, least recently used, then cheapest to reload.
    Persistent groups' models are never chosen.
    """
    def overflow(staying: Iterable[str]) -> bool:
        for resource, capacity in config.capacities.items():
            used = sum(config.models[m].resources.get(resource, 0.0) for m in staying
                       if m in config.models)
            if used + config.models[target].resources.get(resource, 0.0) > capacity + 1e-9:
                return True
        return False

    if not overflow(kept):
        return frozenset()
    candidates = sorted(
        (m for m in kept if not _persistent(config, m)),
        key=lambda m: (snapshot.in_flight.get(m, 0) > 0, snapshot.last_used.get(m, -math.inf),
                       snapshot.load_cost.get(m, 0.0), m))
    for size in range(1, len(candidates) + 1):
        # combinations() follows the candidates' order, so the first fit is the preferred one
        for victims in itertools.combinations(candidates, size):
            if not overflow(kept - set(victims)):
                return frozenset(victims)
    return None


def _persistent(config: Config, model: str) -> bool:
    return (config.matrix is None and model in config.models
            and config.group_of(model).persistent)


def lone_grant(config: Config, model: str, states: Mapping[str, ModelState]) -> bool:
    """``plan``'s decision for a request that arrives when nothing waits, swaps or drains.

    Then it is granted exactly when its model is ready and needs nobody evicted; this answers
    that without a full snapshot, the router's shortcut for the common case (a request for a
    model that is already serving), which saves ~5% of a proxied request's CPU.
    """
    if states.get(model) is not ModelState.READY:
        return False
    running = frozenset(m for m, state in states.items() if state is not ModelState.STOPPED)
    return eviction_for(config, model, running) == frozenset()


def plan(config: Config, snapshot: Snapshot) -> Plan:
    """Decide what the queue may do now; blocked requests stay queued.

    Requests are considered due ones first (waited ``maxAge``), then by priority, then by
    arrival. For each: join an active swap for its model; else be granted if its model is
    ready, needs no eviction and is not being (or about to be) evicted; else start a swap,
    unless it collides with another swap, a victim still has requests in flight, or (swap-aware)
    a victim is within its hold or its turn. Grants and swaps are applied to a working copy so
    later requests see them: a request just granted on a model protects it from eviction.
    """
    settings = config.scheduler
    now = snapshot.now
    swaps = dict(snapshot.swaps)
    in_flight = dict(snapshot.in_flight)
    held_back: set[str] = set()  # models a due swap is waiting to evict: no new grants
    decisions: list[Decision] = []
    wake_at: float | None = None

    def wake(at: float) -> None:
        nonlocal wake_at
        if at > now and math.isfinite(at):
            wake_at = at if wake_at is None else min(wake_at, at)

    def order(p: Pending) -> tuple[bool, int, float, int]:
        due = now - p.arrived >= settings.max_age
        return (not due, -settings.priority.get(p.model, 0), p.arrived, p.request_id)

    for pending in sorted(snapshot.queue, key=order):
        model = pending.model
        if model in snapshot.draining:
            continue  # its new process takes over once the old one has drained
        if model in swaps:
            decisions.append(Join(pending.request_id, model))
            continue
        working = Snapshot(snapshot.states, in_flight, swaps, (), now, snapshot.ready_since,
                           snapshot.last_done, snapshot.last_used, snapshot.load_cost,
                           snapshot.not_before, snapshot.draining, snapshot.returning)
        evict = eviction_for(config, model, running_models(working), working)
        if evict is None:
            decisions.append(Unplaceable(pending.request_id, model, _why_unplaceable(model)))
            continue
        being_evicted = any(model in victims for victims in swaps.values())
        if (snapshot.state(model) is ModelState.READY and not evict and not being_evicted
                and model not in held_back):
            decisions.append(Grant(pending.request_id, model))
            in_flight[model] = in_flight.get(model, 0) + 1
            continue
        if being_evicted or model in held_back or _collides(evict, swaps):
            continue
        due = now - pending.arrived >= settings.max_age
        wake(pending.arrived + settings.max_age)
        if not due:
            protected = [v for v in evict
                         if _in_turn(v, pending.arrived, snapshot, in_flight, config)]
            if protected:
                for victim in protected:
                    turn_start = max(snapshot.ready_since.get(victim, now), pending.arrived)
                    wake(turn_start + settings.batch_time)
                    wake(snapshot.last_done.get(victim, -math.inf)
                         + _hold(victim, snapshot, config))
                continue
        if snapshot.state(model) is not ModelState.READY and \
                now < snapshot.not_before.get(model, -math.inf):
            wake(snapshot.not_before[model])  # backing off after failures: try again later
            continue
        if settings.use != "fifo":
            held_back |= evict  # the victims' turn is over: let them drain
        if any(in_flight.get(victim, 0) > 0 for victim in evict):
            continue
        swaps[model] = evict
        decisions.append(StartSwap(model, evict))
        decisions.append(Join(pending.request_id, model))
    return Plan(decisions, wake_at)


def _in_turn(victim: str, waiting_since: float, snapshot: Snapshot,
             in_flight: Mapping[str, int], config: Config) -> bool:
    """Whether ``victim`` keeps its place against a request waiting since ``waiting_since``.

    It does while it is busy or held (finished a request less than ``holdTime`` ago and its
    clients have been coming back), for at most ``batchTime`` counted from when it
    became ready or the request arrived, whichever is later. Under FIFO (batch time infinite,
    hold 0) only a busy victim is in turn: llama-swap's "no swap while the victim is serving".
    """
    settings = config.scheduler
    now = snapshot.now
    busy = in_flight.get(victim, 0) > 0
    held = (victim in snapshot.returning
            and now - snapshot.last_done.get(victim, -math.inf) < _hold(victim, snapshot, config))
    if not (busy or held):
        return False
    turn_start = max(snapshot.ready_since.get(victim, now), waiting_since)
    return now - turn_start < settings.batch_time


def _hold(model: str, snapshot: Snapshot, config: Config) -> float:
    """``holdTime``, but never longer than the model takes to reload (learnt): past that,
    letting it go and reloading it if its client comes back costs less than waiting."""
    reload = snapshot.load_cost.get(model, 0.0)
    return min(config.scheduler.hold_time, reload) if reload > 0 else config.scheduler.hold_time


def _why_unplaceable(model: str) -> str:
    return (f"model {model} does not fit in the configured resources beside the models "
            "that may not be evicted (persistent groups)")


def _collides(evict: frozenset[str], swaps: Mapping[str, frozenset[str]]) -> bool:
    """Our eviction would stop another swap's target, or overlaps another swap's evictions."""
    return any(target in evict or evict & victims for target, victims in swaps.items())
