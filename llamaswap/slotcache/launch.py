"""One run of a ``slotCache`` model as the manager tracks it, and its small lifecycle
helpers: what was launched (for the fingerprint), which slots are current, the idle save
timer, the running idle save and the reading ahead, all ended with the run."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from llamaswap.slotcache.policy import FileStamp, SlotState, model_files


@dataclass
class Launch:
    """What is known about one run of a model: set at start, completed once healthy."""

    cmd: tuple[str, ...]
    files: list[FileStamp]
    fingerprint: dict[str, Any] | None = None
    unverified: int = 0
    """Tokens restored that no response has confirmed yet (0: nothing to verify)."""
    process: Any = None
    current: dict[int, SlotState] = field(default_factory=dict)
    """Slots whose file in the manifest holds exactly what they hold, with the state they
    had then (``policy.plan_save``); emptied when a save fails."""
    current_since: float = 0.0
    """Clock time of the save or restore that made ``current`` (for the log)."""
    current_by: str = ""
    """What made it: ``idle_save``, ``save`` or ``restore``."""
    saving: Deferred[None] | None = None
    """The idle save running now (a stop waits for it)."""
    idle_timer: IDelayedCall | None = None
    prefetch: Deferred[int] | None = None
    """Reading the slot files ahead while the model loads (``prefetch``)."""


def cancel_idle_timer(launch: Launch) -> None:
    timer, launch.idle_timer = launch.idle_timer, None
    if timer is not None and timer.active():
        timer.cancel()


def end_prefetch(launch: Launch) -> None:
    """The restore is over (or will not come): reading ahead is no use any more."""
    prefetch, launch.prefetch = launch.prefetch, None
    if prefetch is not None:
        prefetch.cancel()


def end_launch(launch: Launch) -> None:
    """A launch replaced by the next start: nothing of it may run on."""
    cancel_idle_timer(launch)
    end_prefetch(launch)


def passing(action: Callable[[], None]) -> Callable[[Any], Any]:
    def run(result: Any) -> Any:
        action()
        return result
    return run


def follow(d: Deferred[None]) -> Deferred[None]:
    """A Deferred that fires when ``d`` does, without taking its result; cancelling it
    cancels ``d`` too (a stop whose time is up ends the save it waited for)."""
    follower: Deferred[None] = Deferred(lambda _: d.cancel())

    def fire(result: Any) -> Any:
        if not follower.called:
            follower.callback(None)
        return result

    d.addBoth(fire)
    return follower


def file_stamps(cmd: tuple[str, ...]) -> list[FileStamp]:
    stamps = []
    for path in model_files(cmd):
        try:
            info = os.stat(path)
            stamps.append(FileStamp(os.path.abspath(path), info.st_size, info.st_mtime_ns))
        except OSError:
            stamps.append(FileStamp(os.path.abspath(path), -1, -1))
    return stamps
