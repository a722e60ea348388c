"""Model processes a crashed llamaswap left behind: recorded while running, reaped at start.

On Linux the keeper (``keeper.py``) already takes a model's process group down when
llamaswap dies. This is the second line: every running model's process group is recorded in
a small JSON state file, and at start llamaswap kills the groups of a previous run whose
owner is dead. It also scans ``/proc`` for keepers carrying this instance's marker whose
owner is dead, in case the state file was lost. A group is only killed when ``/proc`` shows
its leader is one of our keepers, so a reused PID is never hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from llamaswap.logs import get_logger

log = get_logger("llamaswap.orphans")


def default_state_path(config_path: str) -> str:
    """One state file per config file and user, in ``$XDG_RUNTIME_DIR`` or the temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"llamaswap-{os.getuid()}-{instance_id(config_path)}.json")


def instance_id(path: str) -> str:
    return hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]


def keeper_marker(state_path: str) -> str:
    return f"llamaswap-keeper:{instance_id(state_path)}"


class StateFile:
    """The running models' process groups, rewritten (atomically) on every change."""

    def __init__(self, path: str, marker: str) -> None:
        self.path = Path(path)
        self.marker = marker
        self._groups: dict[str, dict[str, Any]] = {}

    def record(self, model: str, pgid: int, cmd: list[str]) -> None:
        self._groups[model] = {"pgid": pgid, "cmd": cmd}
        self._write()

    def forget(self, model: str) -> None:
        if self._groups.pop(model, None) is not None:
            self._write()

    def _write(self) -> None:
        data = {"owner": os.getpid(), "marker": self.marker, "groups": self._groups}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as e:
            log.warn("cannot write the state file {path}: {error}", path=str(self.path),
                     error=str(e))

    def reap(self) -> list[int]:
        """Kill what a dead predecessor left; return the process groups killed."""
        killed: list[int] = []
        previous = self._read()
        owner = previous.get("owner")
        if isinstance(owner, int) and owner != os.getpid() and _alive(owner):
            log.error("state file {path} belongs to a running llamaswap (pid {owner}); two "
                      "instances share one config: not touching its models",
                      path=str(self.path), owner=owner)
            return killed
        for entry in (previous.get("groups") or {}).values():
            pgid = entry.get("pgid") if isinstance(entry, dict) else None
            if isinstance(pgid, int) and _is_our_keeper(pgid, self.marker) is not None:
                killed += _kill_group(pgid)
        for pid, owner_pid in _keepers(self.marker):
            if owner_pid != os.getpid() and not _alive(owner_pid) and pid not in killed:
                killed += _kill_group(pid)
        self._groups = {}
        self._write()
        return killed

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _is_our_keeper(pid: int, marker: str) -> int | None:
    """The owner PID if ``pid`` is a keeper with ``marker``, else ``None``."""
    argv = _cmdline(pid)
    if not argv:
        return None
    for index, arg in enumerate(argv):
        if arg.endswith("keeper.py") and index + 2 < len(argv) and argv[index + 2] == marker:
            try:
                return int(argv[index + 1])
            except ValueError:
                return None
    return None


def _keepers(marker: str) -> list[tuple[int, int]]:
    """(pid, owner pid) of every keeper with ``marker`` visible in ``/proc``."""
    found: list[tuple[int, int]] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            owner = _is_our_keeper(int(entry), marker)
            if owner is not None:
                found.append((int(entry), owner))
    return found


def _kill_group(pgid: int) -> list[int]:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return []
    log.warn("killed process group {pgid} left behind by a previous llamaswap", pgid=pgid)
    return [pgid]
