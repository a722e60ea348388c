"""The keeper: the parent llamaswap gives every model server, so no model outlives llamaswap.

Run as ``python -I -S keeper.py OWNER_PID MARKER ARGV...``. It is on the path of every model
start, so it imports only modules built into the interpreter (no llamaswap; ``posix``,
``_signal`` and ``_ctypes`` rather than ``os``, ``signal`` and ``ctypes``): it costs ~2 ms
beyond the interpreter's own start, down from ~9 ms (measured below). It

1. makes itself the leader of a new process group, which the model and everything the model
   starts inherit: llamaswap stops a model by signalling that whole group;
2. becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``, Linux): a descendant whose parent
   dies is re-parented to the keeper, not to init, so one that left the group (``setsid``)
   is still found by walking the keeper's descendants in ``/proc``;
3. asks Linux to send it SIGUSR1 when llamaswap dies (``PR_SET_PDEATHSIG``), even by
   SIGKILL; SIGUSR1 (from that, or from llamaswap when a stop times out) makes it SIGKILL
   the model and every descendant;
4. forks and execs the model (signal dispositions reset, so the model sees SIGPIPE and
   SIGTERM normally; the model itself dies with SIGKILL if the keeper dies), reports the
   model's PID on file descriptor 3, reaps orphans re-parented to it while the model runs,
   and once the model has exited SIGKILLs whatever is left of the family, then exits with
   the model's status (or dies by the signal that killed it).

``MARKER`` names the llamaswap instance (kept for ``ps``); the environment variable
``LLAMASWAP_INSTANCE``, set by llamaswap and inherited by every descendant, is what a
restarted llamaswap looks for in ``/proc`` (``llamaswap.orphans``). Elsewhere than on Linux
there is no subreaper and no ``/proc``: the group signals and the state file are all there is
(``docs/reliability.md``).

Start cost, spawn to the exit of a model that is ``/bin/true`` (0.6 ms on its own), median
of 200 on the 2-core benchmark machine: ``python -I -S -c pass`` 8.5 ms; this keeper 10.4 ms;
with ``os`` instead of ``posix`` 11.3 ms (``os`` pulls in ``_collections_abc``, ``stat``,
``posixpath``); with ``signal`` and ``ctypes`` as well (the previous keeper) 17.7 ms
(``signal`` imports ``enum``, ``functools``, ``collections``; ``ctypes`` is ~2.5 ms more than
``_ctypes``). What is left is the interpreter's start itself. These figures predate the
subreaper: the walk of ``/proc`` after the model's exit (``family()``) adds ~0.8 ms with
~150 processes on the machine (median of 200 calls), the second ``prctl`` next to nothing.
"""

import _signal as signal  # not ``signal``: see above
import posix
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILL_FAMILY = signal.SIGUSR1
"""Sent by the kernel when llamaswap dies, and by llamaswap when a stop times out."""
# Signals the keeper does not act on: they reach the model through the process group already,
# and a second copy would make servers like llama-server skip their graceful shutdown.
GROUP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# What Python changes at start-up and a model must get back: default dispositions.
RESET_SIGNALS = (*GROUP_SIGNALS, signal.SIGUSR1, signal.SIGPIPE, signal.SIGXFSZ)
DEFAULT_PATH = b"/bin:/usr/bin"
"""``os.defpath``: where a bare command is looked for when ``PATH`` is not set."""


def prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where it does not exist (not Linux) or fails.

    Called through ``_ctypes``, the C half of ``ctypes``; the ``ctypes`` package itself is
    only the fallback.
    """
    try:
        import _ctypes

        program = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]  # libc
        function = _ctypes.dlsym(program, "prctl")
        return bool(_ctypes.call_function(function, (option, value)) == 0)
    except Exception:
        pass
    try:
        import ctypes

        return bool(ctypes.CDLL(None).prctl(option, value) == 0)
    except Exception:
        return False


def set_death_signal(signum: int) -> None:
    """Linux only; elsewhere llamaswap's state file catches orphans at its next start."""
    prctl(PR_SET_PDEATHSIG, signum)


model_pid = 0
"""The model's PID once forked; 0 before."""


def read_file(path: bytes) -> bytes | None:
    try:
        fd = posix.open(path, posix.O_RDONLY)
    except OSError:
        return None
    try:
        return posix.read(fd, 4096)
    except OSError:
        return None
    finally:
        posix.close(fd)


def family() -> list[int]:
    """Every live descendant of the keeper and every other member of its group (``/proc``).

    Empty where there is no ``/proc``: then llamaswap's group signal is all there is.
    """
    me = posix.getpid()
    children: dict[int, list[int]] = {}
    found: set[int] = set()
    try:
        entries = posix.listdir(b"/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        stat = read_file(b"/proc/" + entry + b"/stat")
        if stat is None:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()
        try:
            pid, parent, group = int(entry), int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            continue
        if pid == me:
            continue
        children.setdefault(parent, []).append(pid)
        if group == me:
            found.add(pid)
    seen: set[int] = set()
    pending = [me]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in seen:
                seen.add(child)
                pending.append(child)
    return sorted(found | seen)


def kill_family(*_: object) -> None:
    """SIGKILL the model and all of its family; the main loop then reaps and exits.

    Before the model exists there is nothing to wait for: kill the group and leave.
    """
    if not model_pid:
        try:
            posix.killpg(0, signal.SIGKILL)  # the whole group, the keeper included
        finally:
            posix._exit(1)
    for pid in [model_pid, *family()]:  # the model even where /proc shows nothing
        try:
            posix.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def end_family() -> None:
    """After the model exited: SIGKILL what is left of its family and reap it all.

    Each round kills every descendant seen, then waits for one child (a killed one, or an
    orphan re-parented to the keeper) to be reaped; it ends when the keeper has no child
    left, or none it can see (no ``/proc``).
    """
    while True:
        victims = family()
        for pid in victims:
            try:
                posix.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            reaped, _ = posix.waitpid(-1, 0 if victims else posix.WNOHANG)
        except ChildProcessError:
            return
        if reaped == 0:
            return


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
        # A stop sent since the fork was held back (see ``main``): it ends the child here.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
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


def ignore_group_signal(signum: int, frame: object) -> None:
    """The keeper's part of a group signal: none (the model gets its own copy)."""


def exit_like(status: int) -> None:
    """Leave with the model's exit status, or die by the signal that killed it."""
    if posix.WIFSIGNALED(status):
        signum = posix.WTERMSIG(status)
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL and SIGSTOP have no handler to reset: they act as they are
        posix.kill(posix.getpid(), signum)
        posix._exit(128 + signum)
    posix._exit(posix.waitstatus_to_exitcode(status))


def main() -> None:
    global model_pid
    owner, argv = int(sys.argv[1]), sys.argv[3:]
    posix.setpgid(0, 0)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    # Not SIG_IGN: an ignored signal is discarded, also by the forked child until it resets
    # its dispositions, so a stop sent just after the start would be lost and the model would
    # live until the SIGKILL after ``unloadTimeout``. Blocked across the fork, with a handler
    # that does nothing, such a stop stays pending: the child's, until it has reset its
    # dispositions; the keeper's own (sent before the child existed), passed on to the child.
    signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    for signum in GROUP_SIGNALS:
        signal.signal(signum, ignore_group_signal)
    signal.signal(KILL_FAMILY, kill_family)
    set_death_signal(KILL_FAMILY)
    if posix.getppid() != owner:
        kill_family()  # llamaswap died before the death signal was armed
    child = posix.fork()
    if child == 0:
        run_model(argv)
    for signum in signal.sigpending() & set(GROUP_SIGNALS):
        posix.kill(child, signum)  # sent to the group before the model was in it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
    model_pid = child
    try:
        posix.write(3, f"{child}\n".encode())
        posix.close(3)
    except OSError:
        pass
    while True:  # orphans re-parented to the keeper are reaped as they die
        reaped, status = posix.waitpid(-1, 0)
        if reaped == child:
            break
    end_family()
    exit_like(status)


if __name__ == "__main__":
    main()
