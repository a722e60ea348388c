"""The keeper: the parent llamaswap gives every model server, so no model outlives llamaswap.

Run as ``python -I -S keeper.py OWNER_PID MARKER ARGV...`` (standard library only, no
llamaswap import, so it starts in a few milliseconds). It

1. makes itself the leader of a new process group, which the model and everything the model
   starts inherit: llamaswap stops a model by signalling that whole group;
2. asks Linux to send it SIGUSR1 when llamaswap dies (``PR_SET_PDEATHSIG``), even by
   SIGKILL, and then kills the whole group, grandchildren included;
3. forks and execs the model (signal dispositions reset, so the model sees SIGPIPE and
   SIGTERM normally; the model itself dies with SIGKILL if the keeper dies), reports the
   model's PID on file descriptor 3, and exits with the model's status.

``MARKER`` names the llamaswap instance, so a restarted llamaswap can recognise, in
``/proc``, keepers left behind by its predecessor on systems without ``PR_SET_PDEATHSIG``.
"""

import os
import signal
import sys

PR_SET_PDEATHSIG = 1
# Signals the keeper ignores: they reach the model through the process group already, and a
# second copy would make servers like llama-server skip their graceful shutdown.
GROUP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# What Python changes at start-up and a model must get back: default dispositions.
RESET_SIGNALS = (*GROUP_SIGNALS, signal.SIGUSR1, signal.SIGPIPE, signal.SIGXFSZ)


def set_death_signal(signum: int) -> None:
    """Linux only; elsewhere llamaswap's state file catches orphans at its next start."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signum)
    except Exception:
        pass


def owner_died(*_: object) -> None:
    try:
        os.killpg(0, signal.SIGKILL)  # the whole group, the keeper included
    finally:
        os._exit(1)


def run_model(argv: list[str]) -> None:
    """In the forked child: become the model."""
    try:
        for signum in RESET_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        set_death_signal(signal.SIGKILL)
        try:
            os.close(3)
        except OSError:
            pass
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write(f"llamaswap: cannot run {argv[0]!r}: {e.strerror}\n")
        sys.stderr.flush()
    os._exit(127)


def exit_like(status: int) -> None:
    """Leave with the model's exit status, or die by the signal that killed it."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    os._exit(os.waitstatus_to_exitcode(status))


def main() -> None:
    owner, argv = int(sys.argv[1]), sys.argv[3:]
    os.setpgid(0, 0)
    for signum in GROUP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, owner_died)
    set_death_signal(signal.SIGUSR1)
    if os.getppid() != owner:
        owner_died()  # llamaswap died before the death signal was armed
    child = os.fork()
    if child == 0:
        run_model(argv)
    try:
        os.write(3, f"{child}\n".encode())
        os.close(3)
    except OSError:
        pass
    _, status = os.waitpid(child, 0)
    exit_like(status)


if __name__ == "__main__":
    main()
