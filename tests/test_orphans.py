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

from llamaswap.orphans import (
    INSTANCE_VARIABLE,
    StateFile,
    boot_id,
    default_state_path,
    instance_id,
    keeper_marker,
    kill_verified,
    process_info,
)

DEAD_OWNER = 2**22 + 12345  # above the default pid_max: never a live process
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def survivor(mark: str | None, **kw: object) -> subprocess.Popen[bytes]:
    """A process in a session of its own, carrying ``LLAMASWAP_INSTANCE=mark`` (if given)."""
    env = {k: v for k, v in os.environ.items() if k != INSTANCE_VARIABLE}
    if mark is not None:
        env[INSTANCE_VARIABLE] = mark
    return subprocess.Popen(SLEEPER, env=env, start_new_session=True, **kw)  # type: ignore


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


def write_state(path: Path, groups: dict, owner: int = DEAD_OWNER, **extra: object) -> None:
    path.write_text(json.dumps({"owner": owner, "boot": boot_id(), "groups": groups, **extra}))


def test_marked_processes_of_this_instance_are_killed_even_without_a_state_file(
        tmp_path: Path, spawned: list) -> None:
    path = str(tmp_path / "state.json")
    ours = survivor(f"{instance_id(path)}:some/model")
    other_instance = survivor("0123456789ab:some/model")
    unmarked = survivor(None)
    spawned += [ours, other_instance, unmarked]
    exec_done(ours, other_instance, unmarked)
    assert StateFile(path, keeper_marker(path)).reap() == [ours.pid]
    assert gone(ours)
    assert other_instance.poll() is None and unmarked.poll() is None


def test_a_recorded_group_is_reaped_while_its_leader_is_the_recorded_keeper(
        tmp_path: Path, spawned: list) -> None:
    # The leader and a member of its group that cleared its environment: no marker, but the
    # leader's start time proves the group is the one recorded.
    path = tmp_path / "state.json"
    leader = subprocess.Popen(SLEEPER, env={}, process_group=0)
    exec_done(leader)
    member = subprocess.Popen(SLEEPER, env={}, process_group=leader.pid)
    spawned += [leader, member]
    exec_done(member)
    info = process_info(leader.pid)
    assert info is not None
    write_state(path, {"m": {"pgid": leader.pid, "cmd": ["x"], "start": info.start}})
    assert StateFile(str(path), keeper_marker(str(path))).reap() == sorted(
        [leader.pid, member.pid])
    assert gone(leader) and gone(member)
    assert json.loads(path.read_text())["groups"] == {}


def test_a_recorded_group_whose_leader_is_another_process_is_left_alone(
        tmp_path: Path, spawned: list) -> None:
    # The recorded PID now leads some other group (PID reuse): its start time differs.
    path = tmp_path / "state.json"
    stranger = survivor(None)
    spawned.append(stranger)
    exec_done(stranger)
    info = process_info(stranger.pid)
    assert info is not None
    write_state(path, {"m": {"pgid": stranger.pid, "cmd": ["x"], "start": info.start - 1}})
    assert StateFile(str(path), keeper_marker(str(path))).reap() == []
    assert stranger.poll() is None
    # ... and so is one recorded in another boot
    write_state(path, {"m": {"pgid": stranger.pid, "cmd": ["x"], "start": info.start}},
                boot="another boot")
    assert StateFile(str(path), keeper_marker(str(path))).reap() == []
    assert stranger.poll() is None


def test_a_live_owner_keeps_its_models(tmp_path: Path, spawned: list) -> None:
    path = tmp_path / "state.json"
    owner = subprocess.Popen(SLEEPER)
    model = survivor(f"{instance_id(str(path))}:m")
    spawned += [owner, model]
    exec_done(owner, model)
    owner_info = process_info(owner.pid)
    assert owner_info is not None
    write_state(path, {}, owner=owner.pid, owner_start=owner_info.start)
    assert StateFile(str(path), keeper_marker(str(path))).reap() == []
    assert model.poll() is None


def test_an_owner_pid_reused_by_another_process_does_not_protect_the_survivors(
        tmp_path: Path, spawned: list) -> None:
    path = tmp_path / "state.json"
    unrelated = subprocess.Popen(SLEEPER)
    model = survivor(f"{instance_id(str(path))}:m")
    spawned += [unrelated, model]
    exec_done(unrelated, model)
    info = process_info(unrelated.pid)
    assert info is not None
    write_state(path, {}, owner=unrelated.pid, owner_start=info.start - 1)
    assert StateFile(str(path), keeper_marker(str(path))).reap() == [model.pid]
    assert gone(model) and unrelated.poll() is None


def test_kill_verified_refuses_a_process_that_is_not_the_one_inspected(
        spawned: list) -> None:
    process = survivor(None)
    spawned.append(process)
    exec_done(process)
    info = process_info(process.pid)
    assert info is not None
    older = type(info)(info.pid, info.parent, info.group, info.start - 1, False)
    assert not kill_verified(older, lambda pid: True)  # same PID, another start time
    assert not kill_verified(info, lambda pid: False)  # not ours
    assert process.poll() is None
    assert kill_verified(info, lambda pid: True)
    assert gone(process)


def test_record_and_forget_keep_the_file_current(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(str(path), "m")
    state.record("a", os.getpid(), ["server"])
    data = json.loads(path.read_text())
    me = process_info(os.getpid())
    assert me is not None
    assert data["groups"] == {"a": {"pgid": os.getpid(), "cmd": ["server"], "start": me.start}}
    assert data["owner"] == os.getpid() and data["owner_start"] == me.start
    assert data["boot"] == boot_id() and data["instance"] == instance_id(str(path))
    state.forget("a")
    assert json.loads(path.read_text())["groups"] == {}


def test_a_clean_stop_removes_the_file_unless_models_are_still_recorded(
        tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(str(path), "m")
    state.record("a", os.getpid(), ["server"])
    state.close()  # "a" is still recorded: the file is what a restart needs
    assert json.loads(path.read_text())["groups"]["a"]["pgid"] == os.getpid()
    state.forget("a")
    state.close()
    assert not path.exists()
    state.close()  # twice is harmless
    assert StateFile(str(path), "m").reap() == []  # a missing file is an empty one


def test_default_state_path_is_per_config_and_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    one, two = default_state_path("a.yaml"), default_state_path("b.yaml")
    assert one != two and one.startswith(f"/run/user/1000/llamaswap-{os.getuid()}-")
