# -*- test-case-name: tests.test_reasons -*-
"""Why each model last started and stopped, as the router decided it.

The ``modelStatus`` events (``/api/events``) carry, per model:

- ``swapReason``: why it is (being) loaded: ``"a request for B evicted A (same swap group)"``;
  kept until the model stops.
- ``stopReason`` and ``stopCause``: why it is stopping or stopped (``swap``, ``ttl``,
  ``unload``, ``reload``, ``shutdown``, ``hung``, ``abandoned``, ``crash``,
  ``start_failed``); kept until the model starts again.

The router says why it stops a model (``Router.on_stop``) and which swap evicts what
(``Router.on_swap``); a model that stops without being told to crashed, or failed to
start. The texts are built here from those facts only (pure functions), so a UI need not
guess from the order of events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from llamaswap.policy import ModelState, eviction_cause

if TYPE_CHECKING:
    from llamaswap.config import Config
    from llamaswap.process import ModelProcess

_EVICTION = {
    "group": "same swap group",
    "exclusive": "{target}'s group is exclusive",
    "matrix": "the matrix does not run them together",
    "removed": "removed from the config",
    "resources": "resource budget",
}

_STOP_CAUSE = {"request": "swap", "manual": "unload"}
"""The router's stop reasons that ``stopCause`` names otherwise; the rest keep theirs."""


def swap_text(config: Config, target: str, evict: Iterable[str]) -> str:
    """Why ``target`` is being loaded, naming what it evicts and why."""
    victims = [f"{victim} ({eviction_text(config, target, victim)})" for victim in sorted(evict)]
    text = f"a request for {target}"
    return f"{text} evicted {', '.join(victims)}" if victims else text


def eviction_text(config: Config, target: str, victim: str) -> str:
    return _EVICTION[eviction_cause(config, target, victim)].format(target=target)


def stop_text(config: Config, model: str, reason: str, evicted_by: str | None) -> str:
    """Why the router stops ``model``, from its stop ``reason`` (``Router.on_stop``)."""
    if reason == "request":
        if evicted_by is None:
            return "swapped out for another model"
        return f"swapped out for {evicted_by} ({eviction_text(config, evicted_by, model)})"
    if reason == "ttl":
        settings = config.models.get(model)
        ttl = f" of {settings.ttl:g} s" if settings is not None and settings.ttl else ""
        return f"idle for its ttl{ttl}: unloaded"
    return {
        "manual": "unloaded through the unload API",
        "reload": "a config reload changed or removed it",
        "shutdown": "llamaswap is shutting down",
        "hung": "hung (no progress within its hang timeout): killed",
        "abandoned": "nobody waits for its load any more",
    }.get(reason, reason)


class StateReasons:
    """The current ``swapReason``/``stopReason``/``stopCause`` of every model."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._swap: dict[str, str] = {}
        self._stop: dict[str, tuple[str, str]] = {}  # model -> (cause, text)
        self._evicted_by: dict[str, str] = {}

    def reconfigure(self, config: Config) -> None:
        self._config = config

    def swap_started(self, target: str, evict: frozenset[str]) -> None:
        """``Router.on_swap``: ``target`` is to be loaded, ``evict`` stopped first."""
        self._swap[target] = swap_text(self._config, target, evict)
        for victim in evict:
            self._evicted_by[victim] = target

    def stopping(self, model: str, reason: str) -> None:
        """``Router.on_stop``: the router is about to stop ``model`` for ``reason``."""
        text = stop_text(self._config, model, reason, self._evicted_by.pop(model, None))
        self._stop[model] = (_STOP_CAUSE.get(reason, reason), text)

    def state_changed(self, process: ModelProcess, old: ModelState, new: ModelState) -> None:
        """A model process changed state: starting clears the last stop; stopping without
        the router's word is a crash (or a failed start)."""
        model = process.model.id
        if new is ModelState.STARTING:
            self._stop.pop(model, None)
        elif new is ModelState.STOPPED:
            self._swap.pop(model, None)
            self._evicted_by.pop(model, None)
            error = process.last_error or "no error recorded"
            if old is ModelState.READY:
                self._stop[model] = ("crash", error if error.startswith("exited unexpectedly")
                                     else f"exited unexpectedly: {error}")
            elif old is ModelState.STARTING:
                self._stop[model] = ("start_failed", f"failed to start: {error}")

    def fields(self, model: str) -> dict[str, Any]:
        """The entries ``model`` gets in a ``modelStatus`` event (``None``: no reason)."""
        cause, text = self._stop.get(model, (None, None))
        return {"swapReason": self._swap.get(model), "stopReason": text, "stopCause": cause}
