"""Model processes a crashed llamaswap left behind: recorded while running, reaped at start.

On Linux the keeper (``keeper.py``) already takes a model's whole family down when llamaswap
dies, even descendants that left its process group. This is the second line, for when the
keeper died too (SIGKILLed, or an OOM kill) or there is no ``PR_SET_PDEATHSIG``:

- every model process carries ``LLAMASWAP_INSTANCE=<instance>:<model>`` in its environment
  (set by llamaswap, inherited by all its descendants); the instance is derived from the
  state file's path, so the next llamaswap with the same state file knows its predecessor's
  processes by what they are, wherever they are now (another group, another session);
- the state file records each running model's process group with its leader's start time
  and the boot it was made in, so members of a recorded group that do not carry the marker
  (a program that cleared its environment) are still reaped, but only while the group's
  leader is provably the keeper that was recorded.

A process is killed only once it is verified as ours, and through a pidfd opened before the
check (``pidfd_open``): a PID reused between the check and the signal is never hit. Without
``/proc`` (not Linux) none of this can see anything, and nothing is killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaswap.logs import get_logger

log = get_logger("llamaswap.orphans")

INSTANCE_VARIABLE = "LLAMASWAP_INSTANCE"
"""The environment variable that marks a model's processes: ``<instance>:<model id>``."""


def default_state_path(config_path: str) -> str:
    """One state file per config file and user, in ``$XDG_RUNTIME_DIR`` or the temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"llamaswap-{os.getuid()}-{instance_id(config_path)}.json")


def instance_id(path: str) -> str:
    return hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]


def keeper_marker(state_path: str) -> str:
    return f"llamaswap-keeper:{instance_id(state_path)}"


def instance_mark(instance: str, model: str) -> str:
    """The value of ``LLAMASWAP_INSTANCE`` for ``model``'s processes."""
    return f"{instance}:{model}"


# -- what /proc says about a process -----------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    parent: int
    group: int
    start: int
    """Start time in clock ticks since boot (``/proc/<pid>/stat`` field 22): with the PID,
    it names one process for the whole uptime."""
    zombie: bool


def process_info(pid: int) -> ProcessInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw.rsplit(b")", 1)[-1].split()
    try:
        return ProcessInfo(pid, int(fields[1]), int(fields[2]), int(fields[19]),
                           fields[0] == b"Z")
    except (IndexError, ValueError):
        return None


def environment_value(pid: int, name: str) -> str | None:
    """``name`` in the environment ``pid`` was started with; None if absent or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode("utf-8", "replace")
    return None


def processes() -> Iterator[ProcessInfo]:
    """Every live process visible in ``/proc`` (none where there is no ``/proc``)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            info = process_info(int(entry))
            if info is not None and not info.zombie:
                yield info


def carrying(name: str, prefix: str) -> list[ProcessInfo]:
    """Live processes (not this one) whose ``name`` environment variable starts with
    ``prefix``."""
    me = os.getpid()
    return [info for info in processes() if info.pid != me
            and (environment_value(info.pid, name) or "").startswith(prefix)]


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def kill_verified(info: ProcessInfo, still_ours: Callable[[int], bool]) -> bool:
    """SIGKILL ``info``'s process if it is still the same process and ``still_ours``.

    The pidfd is opened first, then the start time and ``still_ours`` are checked again: if
    the PID was reused meanwhile the check fails, and the pidfd keeps naming the process it
    was opened for, so the signal cannot reach a newcomer.
    """
    open_pidfd = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    pidfd: int | None = None
    if open_pidfd is not None and send is not None:
        try:
            pidfd = open_pidfd(info.pid)
        except ProcessLookupError:
            return False
        except OSError:
            pidfd = None  # an old kernel: check and kill by PID, the small race remains
    try:
        now = process_info(info.pid)
        if now is None or now.start != info.start or now.zombie or not still_ours(info.pid):
            return False
        if pidfd is not None and send is not None:
            send(pidfd, signal.SIGKILL)
        else:
            os.kill(info.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True


# -- the state file ------------------------------------------------------------------------------


class StateFile:
    """The running models' process groups, rewritten (atomically) on every change."""

    def __init__(self, path: str, marker: str) -> None:
        self.path = Path(path)
        self.marker = marker
        self.instance = instance_id(path)
        """What ``LLAMASWAP_INSTANCE`` starts with for this state file's models."""
        self._groups: dict[str, dict[str, Any]] = {}
        me = process_info(os.getpid())
        self._owner_start = me.start if me is not None else None

    def record(self, model: str, pgid: int, cmd: list[str]) -> None:
        leader = process_info(pgid)
        self._groups[model] = {"pgid": pgid, "cmd": cmd,
                               "start": leader.start if leader is not None else None}
        self._write()

    def forget(self, model: str) -> None:
        if self._groups.pop(model, None) is not None:
            self._write()

    def close(self) -> None:
        """A clean stop: with nothing left running, the file goes (a crash leaves it, which
        is its purpose); ``reap`` finds the same nothing in a missing file."""
        if self._groups:
            log.warn("state file {path} kept: models {models} are still recorded",
                     path=str(self.path), models=", ".join(sorted(self._groups)))
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            log.warn("cannot remove the state file {path}: {error}", path=str(self.path),
                     error=str(e))

    def _write(self) -> None:
        data = {"owner": os.getpid(), "owner_start": self._owner_start, "boot": boot_id(),
                "marker": self.marker, "instance": self.instance, "groups": self._groups}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as e:
            log.warn("cannot write the state file {path}: {error}", path=str(self.path),
                     error=str(e))

    def reap(self) -> list[int]:
        """Kill what a dead predecessor left; return the PIDs killed."""
        previous = self._read()
        owner = previous.get("owner")
        if isinstance(owner, int) and owner != os.getpid() and _same_process_alive(
                owner, previous.get("owner_start")):
            log.error("state file {path} belongs to a running llamaswap (pid {owner}); two "
                      "instances share one config: not touching its models",
                      path=str(self.path), owner=owner)
            return []
        killed: list[int] = []
        same_boot = previous.get("boot") is not None and previous.get("boot") == boot_id()
        for model, entry in (previous.get("groups") or {}).items():
            if same_boot and isinstance(entry, dict):  # first: it needs the leader alive
                killed += _reap_recorded_group(str(model), entry)
        prefix = instance_mark(self.instance, "")

        def marked(pid: int) -> bool:
            return (environment_value(pid, INSTANCE_VARIABLE) or "").startswith(prefix)

        for info in carrying(INSTANCE_VARIABLE, prefix):
            mark = environment_value(info.pid, INSTANCE_VARIABLE)
            if kill_verified(info, marked):
                killed.append(info.pid)
                log.warn("killed process {pid} ({mark}) left behind by a previous llamaswap",
                         pid=info.pid, mark=mark)
        self._groups = {}
        self._write()
        return sorted(killed)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def _reap_recorded_group(model: str, entry: dict[str, Any]) -> list[int]:
    """Members of a recorded group without the marker, while its leader is the recorded one.

    A group outlives its leader, but its ID is never handed out again while it has members;
    a live leader must have the recorded start time, or the group is someone else's.
    """
    pgid, start = entry.get("pgid"), entry.get("start")
    if not isinstance(pgid, int) or not isinstance(start, int) or pgid <= 1:
        return []
    leader = process_info(pgid)
    if leader is None or leader.zombie or leader.start != start or leader.group != pgid:
        return []  # the recorded keeper is gone: only the environment marker can tell
    killed = []
    members = [info for info in processes()
               if info.group == pgid and info.start >= start]

    def in_group(pid: int) -> bool:
        now = process_info(pid)
        return now is not None and now.group == pgid
    # the leader last: while it lives, the group's ID cannot be reused
    for info in sorted(members, key=lambda i: i.pid == pgid):
        if kill_verified(info, in_group):
            killed.append(info.pid)
    if killed:
        log.warn("killed process group {pgid} of model {model} left behind by a previous "
                 "llamaswap", pgid=pgid, model=model)
    return killed


def _same_process_alive(pid: int, start: object) -> bool:
    """Whether ``pid`` runs and, if ``start`` was recorded, is still that same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if isinstance(start, int):
        info = process_info(pid)
        if info is not None:
            return info.start == start and not info.zombie
    return True
