"""Selectors and profiles: names that stand for other names.

A *selector* is a virtual model ID whose requests go to one of its targets: ``pin`` (always
the first), ``warm`` (the first one already running, so no swap is needed) or ``spillover``
(fill targets up to ``spillover`` requests each, then start the next). A *profile* is a
runtime-switchable set of *pins*, ``requested name -> target`` (or nothing, which hides and
disables the name). Pure code: parsing with the config's problem collector, and the choice as
a function of model states and reservation counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

STRATEGIES = ("warm", "pin", "spillover")


@dataclass(frozen=True)
class SelectorConfig:
    id: str
    strategy: str
    targets: tuple[str, ...]
    spillover: int = 1
    name: str = ""
    description: str = ""
    unlisted: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileConfig:
    name: str
    description: str
    pins: Mapping[str, str | None]
    """Requested name -> target; ``None`` disables the requested name."""


class Problems(Protocol):
    def error(self, key: str, message: str) -> None: ...

    def mapping(self, value: object, key: str) -> dict[str, Any] | None: ...

    def string(self, d: Mapping[str, Any], key: str, base: str, default: str = "") -> str: ...

    def strings(self, d: Mapping[str, Any], key: str, base: str) -> list[str]: ...

    def boolean(self, d: Mapping[str, Any], key: str, base: str, default: bool) -> bool: ...

    def integer(self, d: Mapping[str, Any], key: str, base: str, default: int) -> int: ...


Resolver = Callable[[str], str | None]
"""A name -> the local model ID or ``peer/model`` it means, or ``None``."""


def parse_selectors(p: Problems, raw: object, resolve: Resolver, is_local: Callable[[str], bool],
                    taken: Callable[[str], bool],
                    coexistence: Callable[[list[str]], str | None]) -> dict[str, SelectorConfig]:
    """``selectors:`` with llama-swap's validation messages. ``coexistence(local targets)``
    says why a spillover selector's local targets cannot all run at once (``None``: they can)."""
    selectors: dict[str, SelectorConfig] = {}
    raw_map = p.mapping(raw, "selectors") or {}
    for selector_id, entry in raw_map.items():
        base = f"selectors.{selector_id}"
        d = p.mapping(entry, base)
        if d is None:
            continue
        if taken(selector_id):
            p.error(base, f"selectors.{selector_id}: name conflicts with model ID/alias")
        strategy = p.string(d, "strategy", base).strip()
        if not strategy:
            p.error(f"{base}.strategy", f"{base}.strategy is required")
        elif strategy not in STRATEGIES:
            p.error(f"{base}.strategy", f'{base}: unknown strategy "{strategy}" (valid: '
                    f'{", ".join(STRATEGIES)})')
        targets = p.strings(d, "targets", base)
        if not targets:
            p.error(f"{base}.targets", f"{base}.targets must contain at least one entry")
        resolved: list[str] = []
        for index, target in enumerate(targets):
            path = f"{base}.targets[{index}]"
            if target in raw_map and resolve(target) is None:
                p.error(path, f'{base} references selector "{target}"; selector chaining is '
                        "not supported")
                continue
            real = resolve(target)
            if real is None:
                p.error(path, f'{base} references unknown model "{target}"')
            elif strategy == "warm" and not is_local(real):
                p.error(path, f'{base}: target "{target}" must resolve to a local model for '
                        'strategy "warm"')
            elif real in resolved:
                p.error(path, f"{base}.targets contains duplicate resolved model {real}")
            else:
                resolved.append(real)
        settings = p.mapping(d.get("settings"), f"{base}.settings") or {}
        spillover = p.integer(settings, "spillover", f"{base}.settings", 1)
        if spillover < 1:
            p.error(f"{base}.settings.spillover", f"{base}.settings.spillover must be >= 1")
        local = [t for t in resolved if is_local(t)]
        problem = coexistence(local) if strategy == "spillover" and len(local) > 1 else None
        if problem:
            p.error(f"{base}.targets", f"{base}: {problem}")
        selectors[selector_id] = SelectorConfig(
            id=selector_id, strategy=strategy, targets=tuple(targets), spillover=spillover,
            name=p.string(d, "name", base), description=p.string(d, "description", base),
            unlisted=p.boolean(d, "unlisted", base, False),
            metadata=p.mapping(d.get("metadata"), f"{base}.metadata") or {})
    return selectors


def parse_profiles(p: Problems, raw: object, resolve: Resolver,
                   selectors: Mapping[str, SelectorConfig]) -> dict[str, ProfileConfig]:
    profiles: dict[str, ProfileConfig] = {}
    for name, entry in (p.mapping(raw, "profiles") or {}).items():
        base = f"profiles.{name}"
        if not name.strip():
            p.error("profiles", "profiles: profile names cannot be empty")
            continue
        if isinstance(entry, list):
            p.error(base, "profile must be a mapping with description and pins; the legacy "
                    "list syntax is no longer supported")
            continue
        d = p.mapping(entry, base) or {}
        raw_pins = p.mapping(d.get("pins"), f"{base}.pins") or {}
        if not raw_pins:
            p.error(f"{base}.pins", f"{base}.pins must contain at least one entry")
        pins: dict[str, str | None] = {}
        for requested, target in raw_pins.items():
            if target is None or target == "":
                pins[requested] = None
            elif not isinstance(target, str):
                p.error(f"{base}.pins.{requested}", "must be a model name, \"\" or ~")
            elif target not in selectors and resolve(target) is None:
                p.error(f"{base}.pins.{requested}",
                        f'{base}.pins.{requested} references unknown model "{target}"')
            else:
                pins[requested] = target
        profiles[name] = ProfileConfig(name=name, description=p.string(d, "description", base),
                                       pins=pins)
    return profiles


# -- runtime --------------------------------------------------------------------------------

READY, STARTING, STOPPING, STOPPED = "ready", "starting", "stopping", "stopped"


class NoTarget(Exception):
    """A selector has no target it may send a request to (answered 503)."""


@dataclass
class SelectorState:
    """Per-selector memory: reservations per target, and the round-robin position."""

    reservations: dict[str, int] = field(default_factory=dict)
    turn: int = 0


def choose(selector: SelectorConfig, state_of: Callable[[str], str],
           memory: SelectorState) -> str:
    """The target a request to ``selector`` goes to. ``state_of(target)`` is one
    of ``ready``, ``starting``, ``stopping``, ``stopped`` (peers count as ready)."""
    targets = list(selector.targets)
    if selector.strategy == "pin":
        return targets[0]
    states = {t: state_of(t) for t in targets}
    if selector.strategy == "warm":
        for wanted in (READY, STARTING):
            for target in targets:
                if states[target] == wanted:
                    return target
        return targets[0]
    reservations = memory.reservations
    candidates = [t for t in targets if states[t] != STOPPING]
    if not candidates:
        raise NoTarget(f'selector "{selector.id}" has no available spillover targets')
    active = [t for t in candidates
              if states[t] in (READY, STARTING) or reservations.get(t, 0) > 0]
    least = None
    if active:
        fewest = min(reservations.get(t, 0) for t in active)
        tied = [t for t in active if reservations.get(t, 0) == fewest]
        least = tied[memory.turn % len(tied)]
        if fewest < selector.spillover:
            memory.turn += 1
            return least
    cold = [t for t in candidates if t not in active]
    if cold:
        return cold[0]
    assert least is not None
    memory.turn += 1
    return least


def reserve(memory: SelectorState, target: str) -> Callable[[], None]:
    """Count a request on ``target``; call the returned function once when it ends."""
    memory.reservations[target] = memory.reservations.get(target, 0) + 1
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            memory.reservations[target] -= 1

    return release


class Disabled(Exception):
    """The active profile disables the requested name (answered 404)."""


class Rewriter:
    """The name a request is served under: the active profile's pin, then a selector's pick.

    ``state_of(name)`` gives a target's state (see ``choose``). The active profile lives in
    memory only, as in llama-swap: none after a start.
    """

    def __init__(self, selectors: Mapping[str, SelectorConfig],
                 profiles: Mapping[str, ProfileConfig], state_of: Callable[[str], str]) -> None:
        self.selectors = selectors
        self.profiles = profiles
        self.active_profile: str | None = None
        self._state_of = state_of
        self._memory = {selector_id: SelectorState() for selector_id in selectors}

    def reconfigure(self, selectors: Mapping[str, SelectorConfig],
                    profiles: Mapping[str, ProfileConfig]) -> None:
        """After a config reload; reservations of surviving selectors are kept."""
        self.selectors, self.profiles = selectors, profiles
        self._memory = {s: self._memory.get(s, SelectorState()) for s in selectors}
        if self.active_profile not in profiles:
            self.active_profile = None

    def pins(self) -> Mapping[str, str | None]:
        return self.profiles[self.active_profile].pins if self.active_profile else {}

    def pinned(self, name: str) -> str:
        """The active profile's target for ``name`` (itself when not pinned)."""
        pins = self.pins()
        if name not in pins:
            return name
        target = pins[name]
        if target is None:
            raise Disabled(f"model '{name}' is disabled by profile '{self.active_profile}'")
        return target

    def rewrite(self, name: str) -> tuple[str, Callable[[], None]]:
        """``(served name, release)``; call ``release`` when the request is over."""
        name = self.pinned(name)
        selector = self.selectors.get(name)
        if selector is None:
            return name, _nothing
        memory = self._memory[selector.id]
        target = choose(selector, self._state_of, memory)
        if selector.strategy != "spillover":
            return target, _nothing
        return target, reserve(memory, target)

    def selector_status(self, selector: SelectorConfig) -> str:
        """``loaded`` if a target is ready or starting (``pin``: its first target only)."""
        targets = selector.targets[:1] if selector.strategy == "pin" else selector.targets
        running = any(self._state_of(t) in (READY, STARTING) for t in targets)
        return "loaded" if running else "unloaded"


def _nothing() -> None:
    pass
