"""The keeper: the parent llamaswap gives every model server, so no model outlives llamaswap.

Run as ``python -I -S keeper.py OWNER_PID MARKER ARGV...``. It is on the path of every model
start, so it imports only modules built into the interpreter (no llamaswap; ``posix``,
``_signal`` and ``_ctypes`` rather than ``os``, ``signal`` and ``ctypes``): it costs ~2 ms
beyond the interpreter's own start, down from ~9 ms (measured below). It

1. makes itself the leader of a new process group, which the model and everything the model
   starts inherit: llamaswap stops a model by signalling that whole group;
2. asks Linux to send it SIGUSR1 when llamaswap dies (``PR_SET_PDEATHSIG``), even by
   SIGKILL, and then kills the whole group, grandchildren included;
3. forks and execs the model (signal dispositions reset, so the model sees SIGPIPE and
   SIGTERM normally; the model itself dies with SIGKILL if the keeper dies), reports the
   model's PID on file descriptor 3, and exits with the model's status.

``MARKER`` names the llamaswap instance, so a restarted llamaswap can recognise, in
``/proc``, keepers left behind by its predecessor on systems without ``PR_SET_PDEATHSIG``.

Start cost, spawn to the exit of a model that is ``/bin/true`` (0.6 ms on its own), median
of 200 on the 2-core benchmark machine: ``python -I -S -c pass`` 8.5 ms; this keeper 10.4 ms;
with ``os`` instead of ``posix`` 11.3 ms (``os`` pulls in ``_collections_abc``, ``stat``,
``posixpath``); with ``signal`` and ``ctypes`` as well (the previous keeper) 17.7 ms
(``signal`` imports ``enum``, ``functools``, ``collections``; ``ctypes`` is ~2.5 ms more than
``_ctypes``). What is left is the interpreter's start itself.
"""

import _signal as signal  # not ``signal``: see above
import posix
import sys

PR_SET_PDEATHSIG = 1
# Signals the keeper ignores: they reach the model through the process group already, and a
# second copy would make servers like llama-server skip their graceful shutdown.
GROUP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# What Python changes at start-up and a model must get back: default dispositions.
RESET_SIGNALS = (*GROUP_SIGNALS, signal.SIGUSR1, signal.SIGPIPE, signal.SIGXFSZ)
DEFAULT_PATH = b"/bin:/usr/bin"
"""``os.defpath``: where a bare command is looked for when ``PATH`` is not set."""


def set_death_signal(signum: int) -> None:
    """Linux only; elsewhere llamaswap's state file catches orphans at its next start.

    ``prctl`` is called through ``_ctypes``, the C half of ``ctypes``; the ``ctypes`` package
    itself is only the fallback.
    """
    try:
        import _ctypes

        program = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]  # libc
        prctl = _ctypes.dlsym(program, "prctl")
        if _ctypes.call_function(prctl, (PR_SET_PDEATHSIG, signum)) == 0:
            return
    except Exception:
        pass
    try:
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signum)
    except Exception:
        pass


def owner_died(*_: object) -> None:
    try:
        posix.killpg(0, signal.SIGKILL)  # the whole group, the keeper included
    finally:
        posix._exit(1)


def execvp(file: str, argv: list[str]) -> None:
    """``os.execvp`` without importing ``os``: the same ``PATH`` search and error choice."""
    if "/" in file:
        posix.execv(file, argv)
    name = file.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    first_other: OSError | None = None  # not "no such file": that one wins, as in os
    last: OSError = FileNotFoundError(2, "No such file or directory")
    for directory in posix.environ.get(b"PATH", DEFAULT_PATH).split(b":"):
        try:
            posix.execv(directory + b"/" + name if directory else name, argv)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = e
            if first_other is None:
                first_other = e
    raise first_other or last


def run_model(argv: list[str]) -> None:
    """In the forked child: become the model."""
    try:
        for signum in RESET_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        set_death_signal(signal.SIGKILL)
        try:
            posix.close(3)
        except OSError:
            pass
        execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write(f"llamaswap: cannot run {argv[0]!r}: {e.strerror}\n")
        sys.stderr.flush()
    posix._exit(127)


def exit_like(status: int) -> None:
    """Leave with the model's exit status, or die by the signal that killed it."""
    if posix.WIFSIGNALED(status):
        signum = posix.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        posix.kill(posix.getpid(), signum)
        posix._exit(128 + signum)
    posix._exit(posix.waitstatus_to_exitcode(status))


def main() -> None:
    owner, argv = int(sys.argv[1]), sys.argv[3:]
    posix.setpgid(0, 0)
    for signum in GROUP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, owner_died)
    set_death_signal(signal.SIGUSR1)
    if posix.getppid() != owner:
        owner_died()  # llamaswap died before the death signal was armed
    child = posix.fork()
    if child == 0:
        run_model(argv)
    try:
        posix.write(3, f"{child}\n".encode())
        posix.close(3)
    except OSError:
        pass
    _, status = posix.waitpid(child, 0)
    exit_like(status)


if __name__ == "__main__":
    main()
