"""The keeper process: a model's group dies with llamaswap, even when llamaswap is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from llamaswap.process import KEEPER

UPSTREAM = Path(__file__).resolve().parent / "upstream.py"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for its (dead) parent's reaper counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_sigkilled_owner_takes_the_model_and_its_grandchild_down(tmp_path: Path) -> None:
    grandchild_file, keeper_file = tmp_path / "grandchild.pid", tmp_path / "keeper.pid"
    # A stand-in for llamaswap: starts a keeper for a model that leaves a grandchild behind.
    owner_code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        keeper = subprocess.Popen([sys.executable, "-I", "-S", {KEEPER!r}, str(os.getpid()),
                                   "test-marker", sys.executable, {str(UPSTREAM)!r},
                                   "--port", "0", "--quiet", "--grandchild",
                                   {str(grandchild_file)!r}], pass_fds=())
        open({str(keeper_file)!r}, "w").write(str(keeper.pid))
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", owner_code])
    try:
        assert wait_until(lambda: grandchild_file.exists() and keeper_file.exists())
        keeper, grandchild = int(keeper_file.read_text()), int(grandchild_file.read_text())
        assert alive(keeper) and alive(grandchild)
        assert os.getpgid(grandchild) == keeper  # the whole family is one process group
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert wait_until(lambda: not alive(grandchild) and not alive(keeper), timeout=5)
    finally:
        owner.kill()
        for path in (keeper_file, grandchild_file):
            if path.exists():
                try:
                    os.killpg(int(path.read_text()), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass


def test_keeper_reports_the_model_pid_and_exits_with_its_status(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    keeper = subprocess.Popen(
        [sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m", sys.executable, "-c",
         "import os, sys; print(os.getpid()); sys.exit(7)"],
        close_fds=False, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.dup2(write_end, 3))  # fd 3, as llamaswap's spawnProcess sets up
    os.close(write_end)
    out, _ = keeper.communicate(timeout=20)
    reported = os.read(read_end, 64).decode().strip()
    os.close(read_end)
    assert keeper.returncode == 7
    assert reported == out.strip() and int(reported) != keeper.pid


def test_keeper_reports_a_command_that_cannot_run() -> None:
    result = subprocess.run([sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m",
                             "/nonexistent/model-server"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 127
    assert "cannot run '/nonexistent/model-server'" in result.stderr
