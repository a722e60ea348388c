"""What a new configuration changes, model by model (pure; the service carries it out).

A model whose launch settings are unchanged keeps running and serving, with its other
settings (ttl, aliases, limits, filters, metadata...) applied at once. A running model whose
launch settings changed is restarted once its requests in flight have finished; a removed one
drains, then stops; a new one is simply available. Nothing in flight is cut off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llamaswap.config import Config, ModelConfig

LAUNCH_FIELDS = ("cmd", "proxy", "check_endpoint", "env")
"""What the running process embodies: changing any of these needs a new process."""


@dataclass(frozen=True)
class ConfigDiff:
    unchanged: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    """Same process, new live settings."""
    restart: tuple[str, ...] = ()
    """Launch settings changed: a new process once the old one has drained."""
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    global_changes: tuple[str, ...] = field(default=())

    def summary(self) -> dict[str, list[str]]:
        return {"unchanged": list(self.unchanged), "updated": list(self.updated),
                "restart": list(self.restart), "removed": list(self.removed),
                "added": list(self.added), "global": list(self.global_changes)}


def launch_key(model: ModelConfig) -> tuple[object, ...]:
    return tuple(getattr(model, name) for name in LAUNCH_FIELDS)


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    unchanged, updated, restart = [], [], []
    for model_id in sorted(set(old.models) & set(new.models)):
        before, after = old.models[model_id], new.models[model_id]
        if launch_key(before) != launch_key(after):
            restart.append(model_id)
        elif before != after:
            updated.append(model_id)
        else:
            unchanged.append(model_id)
    global_changes = [name for name in ("groups", "scheduler", "matrix", "capacities",
                                        "health_check_timeout", "preload", "log_level")
                      if getattr(old, name) != getattr(new, name)]
    return ConfigDiff(tuple(unchanged), tuple(updated), tuple(restart),
                      tuple(sorted(set(old.models) - set(new.models))),
                      tuple(sorted(set(new.models) - set(old.models))),
                      tuple(global_changes))
