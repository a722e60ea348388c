"""The files of the slot caches: one directory per model, slot files and a manifest.

A model's directory holds ``slot-<id>.bin`` files written by llama-server itself and
``manifest.json`` written here: which launch the files belong to (its fingerprint), when
they were saved and what each holds. The calls are small synchronous file operations (a
JSON file of a few hundred bytes, ``stat`` and ``unlink``), cheap enough for the reactor
thread; the slot files' contents are only ever read and written by llama-server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST = "manifest.json"
SLOT_PREFIX = "slot-"
SLOT_SUFFIX = ".bin"


def slot_file_name(slot: int) -> str:
    """A plain file name for a slot (llama-server refuses names with a path in them)."""
    return f"{SLOT_PREFIX}{slot}{SLOT_SUFFIX}"


@dataclass
class SavedSlot:
    slot: int
    file: str
    tokens: int
    bytes: int
    task: int = -1


@dataclass
class Manifest:
    model: str
    fingerprint: dict[str, Any]
    saved_at: float
    slots: list[SavedSlot] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(s.bytes for s in self.slots)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.slots)


def read_manifest(directory: str) -> Manifest | None:
    """The manifest of a cache directory; ``None`` if there is none or it is unreadable."""
    try:
        with open(os.path.join(directory, MANIFEST), encoding="utf-8") as f:
            data = json.load(f)
        slots = [SavedSlot(int(s["slot"]), str(s["file"]), int(s["tokens"]), int(s["bytes"]),
                           int(s.get("task", -1))) for s in data["slots"]]
        return Manifest(str(data["model"]), dict(data["fingerprint"]), float(data["saved_at"]),
                        slots)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_manifest(directory: str, manifest: Manifest) -> None:
    """Write atomically: a crash mid-write leaves the old manifest or none, never half."""
    path = os.path.join(directory, MANIFEST)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(asdict(manifest), f)
    os.replace(temporary, path)


def slot_files(directory: str) -> list[str]:
    """Names of the slot files present in a cache directory."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(SLOT_PREFIX) and n.endswith(SLOT_SUFFIX))


def file_size(directory: str, name: str) -> int:
    try:
        return os.stat(os.path.join(directory, name)).st_size
    except OSError:
        return 0


def remove_file(directory: str, name: str) -> None:
    try:
        os.unlink(os.path.join(directory, name))
    except FileNotFoundError:
        pass


def clear(directory: str) -> None:
    """Remove a cache: every slot file and the manifest (the directory itself stays, since
    a running llama-server may have been started with it as ``--slot-save-path``)."""
    for name in slot_files(directory):
        remove_file(directory, name)
    remove_file(directory, MANIFEST)


def disk_bytes(directory: str) -> int:
    """Bytes the cache's slot files take on disk now."""
    return sum(file_size(directory, name) for name in slot_files(directory))


def scan(root: str) -> Iterator[tuple[str, Manifest]]:
    """Every model directory under ``root`` that has a manifest, with it."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    for name in names:
        directory = os.path.join(root, name)
        manifest = read_manifest(directory)
        if manifest is not None:
            yield directory, manifest
