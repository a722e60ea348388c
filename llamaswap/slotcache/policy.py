"""What the slot cache decides, as pure functions: no I/O, no clock, no reactor.

- A cache belongs to one launch: ``fingerprint`` names what decides whether a saved KV
  cache is valid for a new process, ``fingerprint_differences`` says what changed.
- ``slots_to_save`` picks the slots of ``GET /slots`` that hold tokens; ``plan_save`` leaves
  out those still current (unchanged since the last save or restore of this launch).
- ``idle_save_due`` says when a background save of an idle model may run.
- ``may_match_launch`` tells early (before ``/props``) whether a cache could be restored,
  so its files are worth reading ahead while the model loads.
- ``choose_evictions`` keeps each model's and the total budget, oldest entries first.
- ``restore_helped`` judges a restore by the first response's cached tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FINGERPRINT_VERSION = 1

MODEL_FILE_OPTIONS = frozenset({
    "-m", "--model", "-md", "--model-draft", "-mm", "--mmproj", "--lora", "--control-vector",
    "-mv", "--model-vocoder",
})
"""llama-server options whose value is a file the computed cache depends on."""

PLACEMENT_OPTIONS = frozenset({"--port", "--host"})
"""Options that say where the server listens: they change nothing it computes, and a port
may be allocated differently after a config reload, so they are left out of a fingerprint."""


@dataclass(frozen=True)
class FileStamp:
    """Identity of a model file as seen on disk when the model was started."""

    path: str
    size: int
    mtime_ns: int


def model_files(cmd: Sequence[str]) -> list[str]:
    """The file arguments of ``MODEL_FILE_OPTIONS`` in a command (``-m x`` and ``--model=x``)."""
    files: list[str] = []
    args = list(cmd)
    for index, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if eq and name in MODEL_FILE_OPTIONS and name.startswith("--"):
            files.append(value)
        elif arg in MODEL_FILE_OPTIONS and index + 1 < len(args):
            files.append(args[index + 1])
    return files


def command_identity(cmd: Sequence[str]) -> list[str]:
    """The command without where it listens (``PLACEMENT_OPTIONS`` and their values)."""
    kept: list[str] = []
    skip = False
    for arg in cmd:
        if skip:
            skip = False
            continue
        if arg in PLACEMENT_OPTIONS:
            skip = True
            continue
        if arg.partition("=")[0] in PLACEMENT_OPTIONS and "=" in arg:
            continue
        kept.append(arg)
    return kept


def props_identity(props: Mapping[str, Any]) -> dict[str, Any]:
    """What of llama-server's ``/props`` a cache depends on: context size and slot count."""
    settings = props.get("default_generation_settings")
    n_ctx = settings.get("n_ctx") if isinstance(settings, Mapping) else None
    return {"n_ctx": n_ctx if isinstance(n_ctx, int) else None,
            "slots": props.get("total_slots") if isinstance(props.get("total_slots"), int)
            else None}


def fingerprint(cmd: Sequence[str], files: Iterable[FileStamp],
                props: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-able record of one launch; a saved cache is only restored into an equal one."""
    return {
        "version": FINGERPRINT_VERSION,
        "cmd": command_identity(cmd),
        "files": [[f.path, f.size, f.mtime_ns] for f in files],
        **props_identity(props),
    }


_FIELD_NAMES = {"version": "cache format", "cmd": "command", "files": "model files",
                "n_ctx": "context size", "slots": "slot count"}


def fingerprint_differences(stored: Mapping[str, Any] | None,
                            current: Mapping[str, Any]) -> list[str]:
    """What differs between a saved cache's launch and this one; empty: it may be restored.

    A missing or unreadable record differs in everything: a cache of unknown origin is
    never restored.
    """
    if not isinstance(stored, Mapping):
        return ["no fingerprint"]
    return [_FIELD_NAMES.get(key, key) for key in sorted(set(stored) | set(current))
            if stored.get(key) != current.get(key)]


@dataclass(frozen=True)
class SlotToSave:
    slot: int
    tokens: int
    """Tokens the slot holds (``n_prompt_tokens``: the last prompt and what was generated)."""
    task: int
    """The slot's last task ID: larger means used more recently."""


def slots_to_save(slots: object) -> list[SlotToSave]:
    """The slots of a ``GET /slots`` answer that hold tokens, most recently used first.

    An idle slot can hold nothing (a fresh server, an erased slot): saving it would only
    overwrite a useful file with an empty one.
    """
    found: list[SlotToSave] = []
    if not isinstance(slots, list):
        return found
    for slot in slots:
        if not isinstance(slot, Mapping):
            continue
        slot_id, tokens = slot.get("id"), slot.get("n_prompt_tokens")
        if not isinstance(slot_id, int) or not isinstance(tokens, int) or tokens <= 0:
            continue
        task = slot.get("id_task")
        found.append(SlotToSave(slot_id, tokens, task if isinstance(task, int) else -1))
    return sorted(found, key=lambda s: (-s.task, s.slot))


SlotState = tuple[object, object]
"""What identifies a slot's contents in ``GET /slots``: its last task and its token count.

Measured with llama-server (llama.cpp in llama-cpp-python 0.3.36): every request a slot
serves gets a new ``id_task``; an erase sets ``n_prompt_tokens`` to 0; a save changes
neither; a slot restored into a fresh server and not used since shows neither field (so
``(None, None)``). A slot ``is_processing`` has no state: its contents are changing."""


def slot_states(slots: object) -> dict[int, SlotState | None]:
    """Each slot's ``SlotState`` in a ``GET /slots`` answer (``None``: it is processing)."""
    states: dict[int, SlotState | None] = {}
    if not isinstance(slots, list):
        return states
    for slot in slots:
        if not isinstance(slot, Mapping) or not isinstance(slot.get("id"), int):
            continue
        states[slot["id"]] = (None if slot.get("is_processing") is True
                              else (slot.get("id_task"), slot.get("n_prompt_tokens")))
    return states


@dataclass(frozen=True)
class SavePlan:
    save: list[SlotToSave]
    """Slots that hold tokens their saved file (if any) does not: to save now."""
    current: frozenset[int]
    """Slots whose saved file holds exactly what they hold: their file is kept as it is."""
    states: Mapping[int, SlotState | None]
    """Every slot's state as listed: what a successful save makes current."""


def plan_save(slots: object, current: Mapping[int, SlotState]) -> SavePlan:
    """What a save must write: the slots that hold tokens, except those whose state is the
    one recorded (``current``) when their file was last written or restored in this launch.

    A slot that changed and holds nothing now (erased) is neither saved nor current: its
    old file no longer matches it and is dropped.
    """
    states = slot_states(slots)
    unchanged = frozenset(slot for slot, state in states.items()
                          if state is not None and current.get(slot) == state)
    wanted = [s for s in slots_to_save(slots) if s.slot not in unchanged]
    return SavePlan(wanted, unchanged, states)


def idle_save_due(delay: float, ready: bool, in_flight: int, saving: bool) -> bool:
    """Whether a model that went idle ``delay`` seconds ago (0: idle saves are off) gets
    its background save now: only while it is ready, serves nothing and no save runs."""
    return delay > 0 and ready and in_flight == 0 and not saving


def may_match_launch(stored: Mapping[str, Any] | None, cmd: Sequence[str],
                     files: Iterable[FileStamp]) -> bool:
    """Whether a saved cache can belong to a launch of ``cmd`` as far as is known before the
    server answers ``/props`` (the command and model files; context size and slot count
    are checked at the restore)."""
    if not isinstance(stored, Mapping):
        return False
    known = fingerprint(cmd, files, {})
    return all(stored.get(key) == known[key] for key in ("version", "cmd", "files"))


@dataclass(frozen=True)
class CacheEntry:
    """One saved slot file, as the eviction policy sees it."""

    model: str
    slot: int
    size: int
    age: tuple[float, int]
    """Sort key, smaller is older: (when its model's cache was saved, -recency rank)."""


def choose_evictions(entries: Iterable[CacheEntry], model_budgets: Mapping[str, int],
                     total_budget: int) -> list[CacheEntry]:
    """The entries to delete so that each model stays within its budget and all of them
    within ``total_budget`` (0: no budget), oldest first."""
    remaining = sorted(entries, key=lambda e: e.age)
    evicted: list[CacheEntry] = []
    for model, budget in model_budgets.items():
        if budget <= 0:
            continue
        mine = [e for e in remaining if e.model == model]
        used = sum(e.size for e in mine)
        for entry in mine:
            if used <= budget:
                break
            evicted.append(entry)
            used -= entry.size
    remaining = [e for e in remaining if e not in evicted]
    if total_budget > 0:
        used = sum(e.size for e in remaining)
        for entry in remaining:
            if used <= total_budget:
                break
            evicted.append(entry)
            used -= entry.size
    return evicted


def restore_helped(cached_tokens: int | None) -> bool:
    """Whether the first response after a restore reused the restored cache.

    Some llama.cpp builds accept a restore and then re-process the whole prompt (sliding
    window models without checkpoints): only the response tells.
    """
    return bool(cached_tokens and cached_tokens > 0)
