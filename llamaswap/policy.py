"""Which models to start and stop, and which waiting requests may go ahead.

Pure functions of the configuration and a snapshot of model states: no reactor, no I/O, no
mutation. The router (``router.py``) feeds them snapshots and carries out what they return.
This follows llama-swap's FIFO scheduler (reference §4.6) and group eviction (§4.7).
"""

from __future__ import annotations

import enum
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
    """A request admitted but not yet served, in arrival order."""

    request_id: int
    model: str


@dataclass(frozen=True)
class Snapshot:
    """What the policy may look at. Missing models count as stopped and idle."""

    states: Mapping[str, ModelState] = field(default_factory=dict)
    in_flight: Mapping[str, int] = field(default_factory=dict)
    """Requests granted and not yet finished, per model."""
    swaps: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Active swaps: target model -> the models that swap is evicting."""
    queue: tuple[Pending, ...] = ()

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


Decision = Grant | Join | StartSwap


def may_admit(config: Config, model: str, reserved: int) -> bool:
    """Whether one more request for ``model`` fits under its ``concurrencyLimit``.

    ``reserved`` counts the model's requests anywhere in the system: queued, waiting on a
    swap or being served (llama-swap HEAD semantics).
    """
    return reserved < config.models[model].concurrency_limit


def eviction_for(config: Config, target: str, running: Iterable[str]) -> frozenset[str]:
    """The running models that loading ``target`` must stop (llama-swap's group swapper).

    Same group with ``swap: true``: evicted. Another group: evicted when the target's group is
    ``exclusive`` and that group is not ``persistent``. A non-exclusive target therefore never
    evicts other groups, even exclusive ones (kept on purpose for compatibility).
    """
    target_group = config.group_of(target)
    evict = set()
    for model in running:
        if model == target:
            continue
        group = config.group_of(model)
        if group.id == target_group.id:
            if target_group.swap:
                evict.add(model)
        elif target_group.exclusive and not group.persistent:
            evict.add(model)
    return frozenset(evict)


def running_models(snapshot: Snapshot) -> frozenset[str]:
    """Models occupying resources: anything not stopped, plus the targets of active swaps."""
    active = {m for m, s in snapshot.states.items() if s is not ModelState.STOPPED}
    return frozenset(active | set(snapshot.swaps))


def plan(config: Config, snapshot: Snapshot) -> list[Decision]:
    """Walk the queue in order and say what can proceed now; blocked requests stay queued.

    For each queued request: join an active swap for its model; else grant it when its model
    is ready, needs no eviction and is not being evicted; else start a swap unless that would
    collide with another active swap or stop a model that still has requests in flight (a
    swap never cuts off a request). Decisions are applied to a working copy of the snapshot
    so later requests in the queue see the swaps that earlier ones started.
    """
    swaps = dict(snapshot.swaps)
    decisions: list[Decision] = []
    for pending in snapshot.queue:
        model = pending.model
        if model in swaps:
            decisions.append(Join(pending.request_id, model))
            continue
        working = Snapshot(snapshot.states, snapshot.in_flight, swaps)
        evict = eviction_for(config, model, running_models(working))
        being_evicted = any(model in victims for victims in swaps.values())
        if snapshot.state(model) is ModelState.READY and not evict and not being_evicted:
            decisions.append(Grant(pending.request_id, model))
            continue
        if being_evicted or _collides(evict, swaps):
            continue
        if any(snapshot.in_flight.get(victim, 0) > 0 for victim in evict):
            continue
        swaps[model] = evict
        decisions.append(StartSwap(model, evict))
        decisions.append(Join(pending.request_id, model))
    return decisions


def _collides(evict: frozenset[str], swaps: Mapping[str, frozenset[str]]) -> bool:
    """Our eviction would stop another swap's target, or overlaps another swap's evictions."""
    return any(target in evict or evict & victims for target, victims in swaps.items())
