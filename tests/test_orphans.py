"""Reaping what a crashed llamaswap left behind, and never anything else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaswap.orphans import StateFile, default_state_path, keeper_marker

DEAD_OWNER = 2**22 + 12345  # above the default pid_max: never a live process


def fake_keeper(marker: str, owner: int = DEAD_OWNER) -> subprocess.Popen[bytes]:
    """A process that looks like a keeper of ``marker`` in /proc, in its own group."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "/somewhere/llamaswap/keeper.py", str(owner), marker],
                            start_new_session=True)


def exec_done(*processes: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Wait until each process shows its own argv in /proc (it has exec'd Python)."""
    deadline = time.monotonic() + timeout
    for process in processes:
        while b"time.sleep(60)" not in Path(f"/proc/{process.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "process did not start"
            time.sleep(0.01)


def gone(process: subprocess.Popen[bytes], timeout: float = 5.0) -> bool:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def test_keepers_of_a_dead_owner_are_killed_even_without_a_state_file(
        tmp_path: Path, spawned: list) -> None:
    path = str(tmp_path / "state.json")
    orphan = fake_keeper(keeper_marker(path))
    spawned.append(orphan)
    exec_done(orphan)
    assert StateFile(path, keeper_marker(path)).reap() == [orphan.pid]
    assert gone(orphan)


def test_state_file_groups_are_killed_only_if_they_are_our_keepers(
        tmp_path: Path, spawned: list) -> None:
    path = tmp_path / "state.json"
    marker = keeper_marker(str(path))
    ours = fake_keeper(marker, owner=os.getpid())  # owner alive: only the file names it
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                start_new_session=True)
    spawned += [ours, stranger]
    exec_done(ours, stranger)
    path.write_text(json.dumps({"owner": DEAD_OWNER, "marker": marker, "groups": {
        "a": {"pgid": ours.pid, "cmd": ["x"]}, "b": {"pgid": stranger.pid, "cmd": ["y"]}}}))
    assert StateFile(str(path), marker).reap() == [ours.pid]
    assert gone(ours)
    assert stranger.poll() is None  # a reused PID is never hit
    assert json.loads(path.read_text())["groups"] == {}


def test_a_live_owner_keeps_its_models(tmp_path: Path, spawned: list) -> None:
    path = tmp_path / "state.json"
    marker = keeper_marker(str(path))
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    keeper = fake_keeper(marker, owner=owner.pid)
    spawned += [owner, keeper]
    exec_done(owner, keeper)
    path.write_text(json.dumps({"owner": owner.pid, "groups": {"a": {"pgid": keeper.pid}}}))
    assert StateFile(str(path), marker).reap() == []
    assert keeper.poll() is None


def test_record_and_forget_keep_the_file_current(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(str(path), "m")
    state.record("a", 1234, ["server"])
    assert json.loads(path.read_text())["groups"] == {"a": {"pgid": 1234, "cmd": ["server"]}}
    assert json.loads(path.read_text())["owner"] == os.getpid()
    state.forget("a")
    assert json.loads(path.read_text())["groups"] == {}


def test_default_state_path_is_per_config_and_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    one, two = default_state_path("a.yaml"), default_state_path("b.yaml")
    assert one != two and one.startswith(f"/run/user/1000/llamaswap-{os.getuid()}-")
