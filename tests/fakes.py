"""Test doubles: a reactor that records spawned processes instead of running them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from llamaswap.config import Config, GroupConfig, ModelConfig


@dataclass
class FakeProcess:
    pid: int
    protocol: Any
    executable: str
    args: list[str]
    env: dict[str, str]
    ended: bool = False

    def exit(self, code: int = 0, signal: int | None = None) -> None:
        """The child exits: reaped, then its pipes close, as the real reactor reports it."""
        reason = Failure(ProcessDone(0) if code == 0 and signal is None
                         else ProcessTerminated(code if signal is None else None, signal))
        self.protocol.processExited(reason)
        self.protocol.processEnded(reason)
        self.ended = True

    def output(self, data: bytes, fd: int = 2) -> None:
        if fd == 1:
            self.protocol.outReceived(data)
        else:
            self.protocol.errReceived(data)

    @property
    def model_argv(self) -> list[str]:
        """The model's own argv, after ``keeper.py OWNER_PID MARKER``."""
        keeper = next(i for i, a in enumerate(self.args) if a.endswith("keeper.py"))
        return self.args[keeper + 3:]


class FakeProcessReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self._pids = itertools.count(1000)

    def spawnProcess(self, protocol: Any, executable: str, args: list[str],
                     env: dict[str, str] | None = None, *rest: Any, **kw: Any) -> Any:
        process = FakeProcess(next(self._pids), protocol, executable, list(args), env or {})
        self.processes.append(process)
        transport = _FakeTransport(process.pid)
        protocol.makeConnection(transport)
        return transport

    @property
    def last(self) -> FakeProcess:
        return self.processes[-1]


@dataclass
class _FakeTransport:
    pid: int

    def closeStdin(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass


@dataclass
class SignalLog:
    """Records process-group signals; ``alive`` says whether a group still answers."""

    sent: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, pgid: int, signum: int) -> bool:
        self.sent.append((pgid, signum))
        return True


class ScriptedProbe:
    """A health probe whose answers the test decides; counts calls."""

    def __init__(self) -> None:
        self.healthy = False
        self.calls = 0

    def __call__(self, timeout: float) -> Deferred[bool]:
        self.calls += 1
        return succeed(self.healthy)


def model(model_id: str, **overrides: Any) -> ModelConfig:
    values: dict[str, Any] = {"id": model_id, "cmd": ("server", "--model", model_id),
                              "proxy": "http://127.0.0.1:9"}
    values.update(overrides)
    return ModelConfig(**values)


def make_config(*models: ModelConfig, groups: list[GroupConfig] | None = None,
                **overrides: Any) -> Config:
    """A Config with the implicit default group covering models not in ``groups``."""
    by_id = {m.id: m for m in models}
    group_list = list(groups or [])
    grouped = {member for g in group_list for member in g.members}
    rest = tuple(sorted(set(by_id) - grouped))
    if rest:
        group_list.append(GroupConfig("(default)", rest))
    return Config(models=by_id, groups={g.id: g for g in group_list}, **overrides)
