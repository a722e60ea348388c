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


def test_model_gets_default_signal_dispositions_and_dies_with_its_keeper() -> None:
    # The model is not Python here: Python ignores SIGPIPE itself, which would hide the reset.
    keeper = subprocess.Popen([sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m",
                               "/bin/sleep", "60"])
    try:
        assert wait_until(lambda: _children(keeper.pid) != [])
        (model_pid,) = _children(keeper.pid)
        assert wait_until(lambda: _comm(model_pid) == "sleep")  # exec'd, not a fork of us
        status = dict(line.split(":", 1) for line in Path(f"/proc/{model_pid}/status")
                      .read_text().splitlines())
        ignored = int(status["SigIgn"], 16)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE,
                       signal.SIGXFSZ, signal.SIGUSR1):
            assert not ignored & (1 << (signum - 1)), signal.Signals(signum).name
        assert int(status["SigBlk"], 16) == 0  # the keeper blocks the group signals; not the model
        keeper.send_signal(signal.SIGKILL)  # only the keeper: its death signal kills the model
        keeper.wait()
        assert wait_until(lambda: not alive(model_pid), timeout=5)
    finally:
        if keeper.poll() is None:
            os.killpg(keeper.pid, signal.SIGKILL)
        keeper.wait()


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == pid]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_a_group_sigterm_sent_as_the_keeper_starts_still_stops_the_model() -> None:
    """A stop that arrives while the keeper is still forking must not be lost (it used to be
    ignored there, leaving the model to the SIGKILL after ``unloadTimeout``)."""
    keeper = subprocess.Popen([sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m",
                               "/bin/sleep", "60"])
    try:
        while True:  # signal the group the moment it exists, as llamaswap's stop does
            try:
                os.killpg(keeper.pid, signal.SIGTERM)
                break
            except ProcessLookupError:
                assert keeper.poll() is None
        assert keeper.wait(timeout=20) in (-signal.SIGTERM, 128 + signal.SIGTERM)
    finally:
        if keeper.poll() is None:
            os.killpg(keeper.pid, signal.SIGKILL)
            keeper.wait()


def test_keeper_dies_by_the_signal_that_killed_the_model() -> None:
    result = subprocess.run([sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m",
                             sys.executable, "-c",
                             "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
                            timeout=20)
    assert result.returncode == -signal.SIGTERM


def test_a_bare_command_is_looked_up_on_path_like_execvp(tmp_path: Path) -> None:
    not_executable, executable = tmp_path / "a", tmp_path / "b"
    not_executable.mkdir()
    executable.mkdir()
    (not_executable / "model-server").write_text("#!/bin/sh\nexit 8\n")
    (executable / "model-server").write_text("#!/bin/sh\nexit 9\n")
    (executable / "model-server").chmod(0o755)

    def run(path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m",
                               "model-server"], capture_output=True, text=True, timeout=20,
                              env={"PATH": path})

    # a file that is not executable is passed over for a later one, as os.execvp does
    assert run(f"/nonexistent:{not_executable}:{executable}").returncode == 9
    alone = run(f"{not_executable}:/nonexistent")  # not "no such file" from the last
    assert alone.returncode == 127 and "Permission denied" in alone.stderr
    missing = run("/nonexistent")
    assert missing.returncode == 127 and "No such file or directory" in missing.stderr


def test_a_model_killed_by_sigkill_is_reported_as_such() -> None:
    # The keeper cannot reset SIGKILL's handler (EINVAL): it used to crash with exit status 1.
    result = subprocess.run([sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m",
                             sys.executable, "-c",
                             "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == -signal.SIGKILL
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr


# A model that starts a SIGTERM-ignoring grandchild in a session of its own, reports its PID
# and its own, then waits (exiting 0 on SIGTERM, unless told to ignore it too).
FAMILY_MODEL = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    out, ignore = sys.argv[1], sys.argv[2] == "ignore"
    child = subprocess.Popen([sys.executable, "-c",
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "os.setsid(); time.sleep(3600)"])
    if ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while open(f"/proc/{child.pid}/stat").read().split()[5] != str(child.pid):
        time.sleep(0.01)  # until the grandchild has left the group
    with open(out + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.replace(out + ".tmp", out)
    time.sleep(3600)
""")


def start_family(tmp_path: Path, ignore_sigterm: bool) -> tuple[subprocess.Popen[bytes], int,
                                                                 int]:
    report = tmp_path / "family"
    keeper = subprocess.Popen([sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m",
                               sys.executable, "-c", FAMILY_MODEL, str(report),
                               "ignore" if ignore_sigterm else "exit"])
    assert wait_until(report.exists, timeout=20)
    model, grandchild = (int(n) for n in report.read_text().split())
    assert os.getpgid(grandchild) != keeper.pid  # it left the keeper's group
    return keeper, model, grandchild


def cleanup(keeper: subprocess.Popen[bytes], *pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if keeper.poll() is None:
        keeper.kill()
    keeper.wait()


def test_a_grandchild_that_left_the_group_dies_when_the_model_stops(tmp_path: Path) -> None:
    keeper, model, grandchild = start_family(tmp_path, ignore_sigterm=False)
    try:
        os.killpg(keeper.pid, signal.SIGTERM)  # what llamaswap's stop sends
        assert keeper.wait(20) == 0
        # Gone, not just dying: the keeper killed and reaped it before it exited itself.
        assert not Path(f"/proc/{grandchild}").exists()
        assert not Path(f"/proc/{model}").exists()
    finally:
        cleanup(keeper, model, grandchild)


def test_kill_family_signal_ends_a_model_that_ignores_sigterm(tmp_path: Path) -> None:
    keeper, model, grandchild = start_family(tmp_path, ignore_sigterm=True)
    try:
        os.killpg(keeper.pid, signal.SIGTERM)
        assert alive(model) and alive(grandchild)  # both ignore it
        keeper.send_signal(signal.SIGUSR1)  # llamaswap's escalation when a stop times out
        assert keeper.wait(20) == -signal.SIGKILL  # dies the way the model died
        assert not Path(f"/proc/{grandchild}").exists()
        assert not Path(f"/proc/{model}").exists()
    finally:
        cleanup(keeper, model, grandchild)


def test_sigkilled_owner_takes_a_grandchild_that_left_the_group_down(tmp_path: Path) -> None:
    report, keeper_file = tmp_path / "family", tmp_path / "keeper.pid"
    owner_code = textwrap.dedent(f"""
        import subprocess, sys, time, os
        keeper = subprocess.Popen([sys.executable, "-I", "-S", {KEEPER!r}, str(os.getpid()),
                                   "m", sys.executable, "-c", {FAMILY_MODEL!r},
                                   {str(report)!r}, "ignore"])
        open({str(keeper_file)!r}, "w").write(str(keeper.pid))
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", owner_code])
    pids: list[int] = []
    try:
        assert wait_until(lambda: report.exists() and keeper_file.exists(), timeout=20)
        keeper = int(keeper_file.read_text())
        model, grandchild = (int(n) for n in report.read_text().split())
        pids = [keeper, model, grandchild]
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert wait_until(lambda: not any(alive(pid) for pid in pids), timeout=10)
    finally:
        owner.kill()
        owner.wait()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_orphans_reparented_to_the_keeper_are_reaped_while_the_model_runs(
        tmp_path: Path) -> None:
    # The model's child starts a grandchild and exits at once: the grandchild is re-parented
    # to the keeper (a subreaper), which reaps it when it exits, long before the model ends.
    pid_file, release = tmp_path / "orphan.pid", tmp_path / "release"
    model_code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        orphan_code = ("import os, time, pathlib\\n"
                       "pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\\n"
                       "while not os.path.exists({str(release)!r}): time.sleep(0.01)\\n")
        middle = subprocess.Popen([sys.executable, "-c",
            "import subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1]])",
            orphan_code])
        middle.wait()
        time.sleep(3600)
    """)
    keeper = subprocess.Popen([sys.executable, "-I", "-S", KEEPER, str(os.getpid()), "m",
                               sys.executable, "-c", model_code])
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=20)
        orphan = int(pid_file.read_text())
        assert wait_until(lambda: _parent(orphan) == keeper.pid)
        release.write_text("")
        assert wait_until(lambda: not Path(f"/proc/{orphan}").exists())  # not a zombie
        assert keeper.poll() is None  # the model still runs
    finally:
        os.killpg(keeper.pid, signal.SIGKILL)
        keeper.wait()
