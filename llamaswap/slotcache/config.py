"""Decoding the ``slotCache`` settings and expanding ``${SLOT_CACHE_DIR}``.

Pure functions over the macro-expanded config tree; problems are reported through
``report(key_path, message)`` like the rest of the config loader, so a bad value names the
file, the key and what is wrong. Unknown keys are the schema's business
(``llamaswap/config/schema.json``): warned about, like everywhere else.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Report = Callable[[str, str], None]

MACRO = "${SLOT_CACHE_DIR}"
DEFAULT_SAVE_TIMEOUT = 30.0
DEFAULT_RESTORE_TIMEOUT = 30.0
DEFAULT_IDLE_SAVE = 1.0
"""Seconds a model stays idle before its slots are saved in the background."""
MAX_BYTES = 1 << 50
"""The largest budget accepted (1 PiB): beyond it a number is a typo, not a disk."""
MAX_SECONDS = 86400.0
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_UNSAFE_PATH = re.compile(r"[\s'\"\\]")


@dataclass(frozen=True)
class SlotCacheRoot:
    """The top-level ``slotCache`` block: where caches live and the total disk budget."""

    dir: str
    max_bytes: int = 0
    """Total bytes of all models' caches; 0: no total budget (one cache per model)."""
    save_timeout: float = DEFAULT_SAVE_TIMEOUT
    """Seconds a save may delay a stop before the model is stopped without it."""
    restore_timeout: float = DEFAULT_RESTORE_TIMEOUT
    """Seconds a restore may delay readiness before the model is served cold."""
    idle_save: float = DEFAULT_IDLE_SAVE
    """Seconds after a model's last request before its slots are saved while it is idle,
    so a later stop finds the cache current; 0: no idle saves (a stop saves everything)."""


@dataclass(frozen=True)
class ModelSlotCache:
    """A model's ``slotCache``: ``true`` or ``{enabled: true, maxBytes: N}``."""

    enabled: bool = False
    max_bytes: int = 0
    """This model's cache budget in bytes; 0: no budget of its own."""
    idle_save: float | None = None
    """This model's ``idleSave`` in seconds (0: off); ``None``: the top level's."""

    def idle_delay(self, root: SlotCacheRoot) -> float:
        """Seconds of idleness before a background save; 0: never."""
        return root.idle_save if self.idle_save is None else self.idle_save


def default_root(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_CACHE_HOME/llamaswap/slot-cache`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llamaswap", "slot-cache")


def model_dir_name(model_id: str) -> str:
    """A directory name for a model: readable, and distinct for IDs that differ only in
    characters a file name cannot hold (``a/b`` and ``a_b``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_id).strip(".") or "model"
    digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:8]
    return f"{safe[:64]}-{digest}"


def model_cache_dir(root: str, model_id: str) -> str:
    return os.path.join(root, model_dir_name(model_id))


def parse_size(value: object) -> int | None:
    """Bytes from ``1048576``, ``"100MB"`` or ``"1.5GiB"``; ``None`` if it is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_BYTES else None
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    power = "kmgt".find(match.group(2).lower()) + 1
    size = float(match.group(1)) * (1024 if match.group(3) else 1000) ** power
    return int(size) if size <= MAX_BYTES else None


def _size(raw: Mapping[str, Any], key: str, base: str, report: Report) -> int:
    value = raw.get(key)
    if value is None:
        return 0
    size = parse_size(value)
    if size is None:
        report(f"{base}.{key}", f"must be a size in bytes like 1073741824, '500MB' or '2GiB' "
               f"(0: no budget; at most 1 PiB), got {value!r}")
        return 0
    return size


def _seconds(raw: Mapping[str, Any], key: str, base: str, default: float,
             report: Report) -> float:
    value = raw.get(key)
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 < value <= MAX_SECONDS):
        report(f"{base}.{key}", f"must be a number of seconds > 0 and at most "
               f"{MAX_SECONDS:g}, got {value!r}")
        return default
    return float(value)


def _idle_save(raw: Mapping[str, Any], base: str, report: Report) -> float | None:
    """``idleSave``: seconds >= 0, ``true`` (the default delay) or ``false``/0 (off)."""
    value = raw.get("idleSave")
    if value is None:
        return None
    if value is True:
        return DEFAULT_IDLE_SAVE
    if value is False:
        return 0.0
    if not isinstance(value, int | float) or not 0 <= value <= MAX_SECONDS:
        report(f"{base}.idleSave", f"must be a number of seconds from 0 to {MAX_SECONDS:g} "
               f"(0 or false: no saves while idle; true: {DEFAULT_IDLE_SAVE:g}s), got {value!r}")
        return None
    return float(value)


def parse_slot_cache_root(raw: object, report: Report,
                          environ: Mapping[str, str] | None = None) -> SlotCacheRoot:
    """The top-level ``slotCache`` block (absent: the defaults)."""
    base = "slotCache"
    if raw is None:
        return SlotCacheRoot(dir=default_root(environ))
    if not isinstance(raw, dict):
        report(base, f"must be a mapping with dir and maxBytes, got {raw!r}")
        return SlotCacheRoot(dir=default_root(environ))
    directory = raw.get("dir")
    if directory is None or directory == "":
        directory = default_root(environ)
    elif not isinstance(directory, str):
        report(f"{base}.dir", f"must be a directory path, got {directory!r}")
        directory = default_root(environ)
    directory = os.path.abspath(os.path.expanduser(directory))
    if _UNSAFE_PATH.search(directory):
        report(f"{base}.dir", f"must not contain spaces, quotes or backslashes (it is put into "
               f"commands as {MACRO}), got {directory!r}")
    return SlotCacheRoot(
        dir=directory,
        max_bytes=_size(raw, "maxBytes", base, report),
        save_timeout=_seconds(raw, "saveTimeout", base, DEFAULT_SAVE_TIMEOUT, report),
        restore_timeout=_seconds(raw, "restoreTimeout", base, DEFAULT_RESTORE_TIMEOUT, report),
        idle_save=_or(_idle_save(raw, base, report), DEFAULT_IDLE_SAVE),
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def parse_model_slot_cache(raw: object, base: str, report: Report) -> ModelSlotCache:
    """A model's ``slotCache``: absent or ``false`` (off), ``true``, or a mapping."""
    if raw is None or raw is False:
        return ModelSlotCache()
    if raw is True:
        return ModelSlotCache(enabled=True)
    if not isinstance(raw, dict):
        report(base, f"must be true, false or a mapping with enabled, maxBytes and idleSave, "
               f"got {raw!r}")
        return ModelSlotCache()
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        report(f"{base}.enabled", f"must be true or false, got {enabled!r}")
        enabled = False
    return ModelSlotCache(enabled=enabled, max_bytes=_size(raw, "maxBytes", base, report),
                          idle_save=_idle_save(raw, base, report))


def expand_slot_cache_dirs(tree: dict[str, Any], report: Report,
                           environ: Mapping[str, str] | None = None) -> None:
    """Replace ``${SLOT_CACHE_DIR}`` in each model's ``cmd`` with that model's cache directory.

    Runs on the macro-expanded tree before leftover macros are reported. A model that uses
    the macro without ``slotCache`` enabled is an error: its directory would not exist and
    llama-server refuses to start with a missing ``--slot-save-path``.
    """
    models = tree.get("models")
    if not isinstance(models, dict):
        return
    root: str | None = None
    for model_id, model in models.items():
        if not isinstance(model, dict):
            continue
        cmd = model.get("cmd")
        if not isinstance(cmd, str) or MACRO not in cmd:
            continue
        base = f"models.{model_id}"
        settings = parse_model_slot_cache(model.get("slotCache"), f"{base}.slotCache",
                                          lambda *_: None)
        if not settings.enabled:
            report(f"{base}.cmd", f"{MACRO} is used but slotCache is not enabled for this "
                   "model (add slotCache: true)")
        if root is None:
            root = parse_slot_cache_root(tree.get("slotCache"), lambda *_: None, environ).dir
        model["cmd"] = cmd.replace(MACRO, model_cache_dir(root, str(model_id)))
