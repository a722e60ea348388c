"""How hard llamaswap watches a model: hangs, liveness, restart backoff, the circuit breaker.

```yaml
supervision:                 # defaults for every model; models.<id>.supervision overrides keys
  hangTimeout: 0             # requests in flight but no byte from the model for N s: hung (0 = off)
  livenessInterval: 0        # probe checkEndpoint of an idle ready model every N s (0 = off)
  backoff: 1                 # after a failed start or a crash, wait 1, 2, 4 ... s before the next
  maxBackoff: 60
  maxFailures: 5             # this many failures within failureWindow open the circuit:
  failureWindow: 300         #   requests get 503 + Retry-After until the window passes
  progressResetsTimeout: false   # any output while starting restarts the healthCheckTimeout
```

Pure code: the dataclass, its parsing, and the backoff arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from llamaswap.routing import Problems

_KEYS = {
    "hangTimeout": "hang_timeout",
    "livenessInterval": "liveness_interval",
    "backoff": "backoff",
    "maxBackoff": "max_backoff",
    "maxFailures": "max_failures",
    "failureWindow": "failure_window",
    "progressResetsTimeout": "progress_resets_timeout",
}


@dataclass(frozen=True)
class SupervisionConfig:
    hang_timeout: float = 0.0
    liveness_interval: float = 0.0
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_failures: int = 5
    failure_window: float = 300.0
    progress_resets_timeout: bool = False


def parse_supervision(p: Problems, raw: object, base: str,
                      defaults: SupervisionConfig) -> SupervisionConfig:
    """Decode a ``supervision`` block over ``defaults``; unknown keys warn, bad values fail."""
    block = p.mapping(raw, base)
    if not block:
        return defaults
    values: dict[str, Any] = {f.name: getattr(defaults, f.name) for f in fields(defaults)}
    for key, value in block.items():
        name = _KEYS.get(key)
        if name is None:
            p.warn(f"{base}.{key}", f"unknown key (known: {', '.join(sorted(_KEYS))})")
        elif name == "progress_resets_timeout":
            values[name] = p.boolean(block, key, base, values[name])
        elif name == "max_failures":
            number = p.integer(block, key, base, values[name])
            if number < 1:
                p.error(f"{base}.{key}", f"must be >= 1, got {number}")
            else:
                values[name] = number
        else:
            seconds = p.seconds(block, key, base, values[name])
            if seconds < 0:
                p.error(f"{base}.{key}", f"must be >= 0, got {value}")
            else:
                values[name] = seconds
    return SupervisionConfig(**values)


def backoff_delay(settings: SupervisionConfig, failures: int) -> float:
    """Seconds to wait after the ``failures``-th recent failure: 1, 2, 4 ... up to the max."""
    if failures <= 0 or settings.backoff <= 0:
        return 0.0
    return min(settings.backoff * 2.0 ** (failures - 1), settings.max_backoff)


def recent(failures: Sequence[float], now: float, settings: SupervisionConfig) -> list[float]:
    """The failure times still inside the window."""
    return [t for t in failures if now - t < settings.failure_window]

