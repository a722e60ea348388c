"""Scheduling and coexistence settings: ``routing.scheduler``, matrix routing, resource budgets.

Pure code: decoded from the macro-expanded config tree by ``config.py``, read by the policy.

```yaml
routing:
  router: {use: group | matrix, settings: {groups: ..., matrix: ...}}
  scheduler:
    use: swapaware            # default; "fifo" is llama-swap's arrival-order behaviour
    maxQueue: 100             # requests waiting for any model (429 beyond); 0 = unbounded
    queueTimeout: 600         # seconds a request may wait for its model (503 beyond); 0 = never
    heartbeat: 5              # SSE comment every N seconds to waiting streaming clients; 0 = off
    abandonUnneededLoads: false
    settings:
      swapaware: {holdTime: 1, batchTime: 10, maxAge: 30, priority: {model: 10}}
      fifo: {priority: {model: 10}}
resources: {gpu0_vram_mb: 24000}         # capacities
models: {m: {resources: {gpu0_vram_mb: 9000}, maxQueue: 20}}
```
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llamaswap.matrix import Matrix, MatrixError, compile_matrix

SCHEDULERS = ("swapaware", "fifo")
_VAR_KEY = re.compile(r"^[a-zA-Z0-9.-]{1,32}$")


@dataclass(frozen=True)
class SchedulerConfig:
    """How waiting requests are ordered and bounded. Defaults are the swap-aware policy's."""

    use: str = "swapaware"
    hold_time: float = 1.0
    """After a model finishes a request it stays resident this long before a swap may take it."""
    batch_time: float = 10.0
    """A resident model keeps serving its queue at most this long while others wait."""
    max_age: float = 30.0
    """A request waiting this long beats batching and holding: its model is loaded next."""
    priority: Mapping[str, int] = field(default_factory=dict)
    max_queue: int = 0
    """Requests waiting for any model; 0 = unbounded."""
    queue_timeout: float = 600.0
    """Seconds a request may wait for its model before 503; 0 = no limit."""
    heartbeat: float = 5.0
    """Seconds between SSE comment heartbeats to waiting streaming clients; 0 = none."""
    abandon_unneeded_loads: bool = False

    @classmethod
    def fifo(cls, **overrides: Any) -> SchedulerConfig:
        """llama-swap's FIFO: no holding, no batching limit, no age override."""
        values: dict[str, Any] = {"use": "fifo", "hold_time": 0.0, "batch_time": math.inf,
                                  "max_age": math.inf}
        values.update(overrides)
        return cls(**values)


class Problems(Protocol):
    """The subset of config.py's problem collector used here."""

    def error(self, key: str, message: str) -> None: ...

    def warn(self, key: str, message: str) -> None: ...

    def mapping(self, value: object, key: str) -> dict[str, Any] | None: ...

    def integer(self, d: Mapping[str, Any], key: str, base: str, default: int) -> int: ...

    def seconds(self, d: Mapping[str, Any], key: str, base: str, default: float) -> float: ...

    def boolean(self, d: Mapping[str, Any], key: str, base: str, default: bool) -> bool: ...

    def string(self, d: Mapping[str, Any], key: str, base: str, default: str = "") -> str: ...


_SCHEDULER_KEYS = {"use", "settings", "maxQueue", "queueTimeout", "heartbeat",
                   "abandonUnneededLoads"}
_SWAPAWARE_KEYS = {"holdTime", "batchTime", "maxAge", "priority"}


def parse_scheduler(p: Problems, raw: object, model_ids: Collection[str]) -> SchedulerConfig:
    """Decode ``routing.scheduler``; unknown names, negative numbers and unknown models fail."""
    base = "routing.scheduler"
    scheduler = p.mapping(raw, base) or {}
    _unknown_keys(p, scheduler, base, _SCHEDULER_KEYS)
    use = p.string(scheduler, "use", base, "swapaware").strip() or "swapaware"
    if use not in SCHEDULERS:
        p.error(f"{base}.use", f'unknown scheduler "{use}" (valid: {", ".join(SCHEDULERS)})')
        use = "swapaware"
    settings = p.mapping(scheduler.get("settings"), f"{base}.settings") or {}
    _unknown_keys(p, settings, f"{base}.settings", set(SCHEDULERS))
    chosen_base = f"{base}.settings.{use}"
    chosen = p.mapping(settings.get(use), chosen_base) or {}
    _unknown_keys(p, chosen, chosen_base, _SWAPAWARE_KEYS if use == "swapaware" else {"priority"})
    # llama-swap configs give priorities under settings.fifo; they keep working under swapaware.
    priority_base = chosen_base
    if "priority" not in chosen and use != "fifo":
        fifo = p.mapping(settings.get("fifo"), f"{base}.settings.fifo") or {}
        _unknown_keys(p, fifo, f"{base}.settings.fifo", {"priority"})
        chosen = {**chosen, "priority": fifo.get("priority")}
        priority_base = f"{base}.settings.fifo"
    priority = _priority(p, chosen.get("priority"), f"{priority_base}.priority", model_ids)
    max_queue = _non_negative_int(p, scheduler, "maxQueue", base, 0)
    queue_timeout = _non_negative(p, scheduler, "queueTimeout", base, 600.0)
    heartbeat = _non_negative(p, scheduler, "heartbeat", base, 5.0)
    abandon = p.boolean(scheduler, "abandonUnneededLoads", base, False)
    if use == "fifo":
        return SchedulerConfig.fifo(priority=priority, max_queue=max_queue,
                                    queue_timeout=queue_timeout, heartbeat=heartbeat,
                                    abandon_unneeded_loads=abandon)
    return SchedulerConfig(
        use=use,
        hold_time=_non_negative(p, chosen, "holdTime", chosen_base, 1.0),
        batch_time=_non_negative(p, chosen, "batchTime", chosen_base, 10.0),
        max_age=_non_negative(p, chosen, "maxAge", chosen_base, 30.0),
        priority=priority, max_queue=max_queue, queue_timeout=queue_timeout,
        heartbeat=heartbeat, abandon_unneeded_loads=abandon,
    )


def _priority(p: Problems, raw: object, base: str, model_ids: Collection[str]) -> dict[str, int]:
    result: dict[str, int] = {}
    for model, value in (p.mapping(raw, base) or {}).items():
        if model not in model_ids:
            p.error(f"{base}.{model}", f'priority references unknown model "{model}"')
        elif not isinstance(value, int) or isinstance(value, bool):
            p.error(f"{base}.{model}", f"must be an integer, got {value!r}")
        else:
            result[model] = value
    return result


def parse_matrix(p: Problems, raw: object, base: str,
                 model_ids: Collection[str]) -> Matrix | None:
    """Decode a matrix block (``vars``, ``evict_costs``, ``sets``) with llama-swap's messages."""
    block = p.mapping(raw, base)
    if block is None:
        return None
    _unknown_keys(p, block, base, {"vars", "evict_costs", "sets"})
    variables: dict[str, str] = {}
    for key, model in (p.mapping(block.get("vars"), f"{base}.vars") or {}).items():
        if not _VAR_KEY.match(str(key)):
            p.error(f"{base}.vars.{key}", f"matrix: var key {key!r} must contain only letters, "
                    "digits, '.' or '-' (1-32 characters)")
        elif not isinstance(model, str) or model not in model_ids:
            p.error(f"{base}.vars.{key}", f'var key "{key}" references unknown model "{model}"')
        else:
            variables[str(key)] = model
    costs: dict[str, int] = {}
    for key, cost in (p.mapping(block.get("evict_costs"), f"{base}.evict_costs") or {}).items():
        if key not in variables and key not in model_ids:
            p.error(f"{base}.evict_costs.{key}", f'evict_costs: unknown var or model "{key}"')
        elif not isinstance(cost, int) or isinstance(cost, bool) or cost <= 0:
            p.error(f"{base}.evict_costs.{key}",
                    f'evict_cost for "{key}" must be a positive integer, got {cost}')
        else:
            costs[str(key)] = cost
    sets: dict[str, str] = {}
    for name, expr in (p.mapping(block.get("sets"), f"{base}.sets") or {}).items():
        if not isinstance(expr, str):
            p.error(f"{base}.sets.{name}", f"must be a set expression string, got {expr!r}")
        else:
            sets[str(name)] = expr
    if not sets:
        p.error(f"{base}.sets", "matrix: matrix must define at least one set")
        return None
    try:
        return compile_matrix(sets, variables, costs, model_ids)
    except MatrixError as e:
        p.error(f"{base}.sets", f"matrix: {e}")
        return None


Needs = dict[str, dict[str, float]]


def parse_resources(p: Problems, tree: Mapping[str, Any], models: Mapping[str, Any],
                    model_ids: Collection[str]) -> tuple[dict[str, float], Needs]:
    """Capacities (top-level ``resources``) and each model's needs (``models.<id>.resources``).

    A need for an undeclared resource, or larger than the capacity, is an error: such a model
    could never be started.
    """
    capacities: dict[str, float] = {}
    for name, value in (p.mapping(tree.get("resources"), "resources") or {}).items():
        if _is_amount(value):
            capacities[str(name)] = float(value)
        else:
            p.error(f"resources.{name}", f"must be a number >= 0, got {value!r}")
    needs: dict[str, dict[str, float]] = {}
    for model_id in model_ids:
        raw = models.get(model_id)
        if not isinstance(raw, dict) or raw.get("resources") is None:
            continue
        base = f"models.{model_id}.resources"
        wanted: dict[str, float] = {}
        for name, value in (p.mapping(raw.get("resources"), base) or {}).items():
            if name not in capacities:
                p.error(f"{base}.{name}", f'unknown resource "{name}" (declare its capacity in '
                        "the top-level resources block)")
            elif not _is_amount(value):
                p.error(f"{base}.{name}", f"must be a number >= 0, got {value!r}")
            elif float(value) > capacities[name]:
                p.error(f"{base}.{name}", f"needs {value} but the capacity is "
                        f"{capacities[name]:g}: this model could never start")
            else:
                wanted[str(name)] = float(value)
        needs[model_id] = wanted
    return capacities, needs


def _is_amount(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _non_negative(p: Problems, d: Mapping[str, Any], key: str, base: str,
                  default: float) -> float:
    value = p.seconds(d, key, base, default)
    if value < 0:
        p.error(f"{base}.{key}", f"must be >= 0, got {value:g}")
        return default
    return value


def _non_negative_int(p: Problems, d: Mapping[str, Any], key: str, base: str,
                      default: int) -> int:
    value = p.integer(d, key, base, default)
    if value < 0:
        p.error(f"{base}.{key}", f"must be >= 0, got {value}")
        return default
    return value


def _unknown_keys(p: Problems, d: Mapping[str, Any], base: str, known: Collection[str]) -> None:
    for key in d:
        if key not in known:
            p.warn(f"{base}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
