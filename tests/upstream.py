"""Test-only upstream: the demo server plus fault injection.

Integration tests spawn it as ``sys.executable tests/upstream.py --port N ...`` to get a real
child process that can misbehave on purpose: refuse to die on SIGTERM, leave a grandchild behind,
fail during start-up, crash while idle or mid-stream, never become healthy, or echo back exactly
what the proxy sent it. Everything the shipped demo does still works (same flags, same endpoints).

Extra flags: ``--pid-file``, ``--ignore-sigterm``, ``--grandchild PIDFILE``,
``--exit-during-start CODE``, ``--exit-after SECONDS``, ``--never-healthy``.

Extra request fields on the inference endpoints: ``"test_delay": S`` (wait S seconds before
answering) and ``"test_crash_after": N`` (streaming: send N tokens then ``os._exit(7)``; if the
reply has fewer tokens, crash after the last one, before the finish chunk; non-streaming: crash
without answering).

Extra endpoints (any method): ``/echo-headers`` (received headers as a JSON object keyed by
lower-case name), ``/echo`` and ``/echo/...`` (``{"path", "method", "headers", "body",
"body_length", "query"}``; ``path`` is the raw request target including any query string),
``"test_echo": true`` in a POST body on any path answers like ``/echo``;
``/slow?n=K&delay=S`` (K plain-text chunks ``chunk-i\\n``, S seconds apart) and ``/env``
(the process environment as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_demo() -> ModuleType:
    """Import ``llamaswap.demo`` without running ``llamaswap/__init__.py``.

    The package ``__init__`` imports Twisted, which would add a few hundred milliseconds to
    every upstream spawn in the test-suite; demo.py itself is standard-library only. So load
    the checkout's demo.py by path when it is there (a fresh clone, installed or not), and fall
    back to the installed package otherwise.
    """
    path = os.path.join(_REPO_ROOT, "llamaswap", "demo.py")
    if not os.path.isfile(path):
        import llamaswap.demo

        return llamaswap.demo
    spec = importlib.util.spec_from_file_location("_llamaswap_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from llamaswap.demo import (
        DemoOptions,
        DemoServer,
        Handler,
        Request,
        Responder,
        build_parser,
        options_from_args,
        run,
    )
else:
    _demo = _load_demo()
    DemoOptions = _demo.DemoOptions
    DemoServer = _demo.DemoServer
    Request = _demo.Request
    Responder = _demo.Responder
    build_parser = _demo.build_parser
    options_from_args = _demo.options_from_args
    run = _demo.run

CRASH_STATUS = 7
EXIT_AFTER_STATUS = 3

# Runs in the grandchild: ignore SIGTERM *before* announcing the pid, so that once the pid file
# exists a test can rely on SIGTERM alone not being enough.
GRANDCHILD_CODE = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
path = sys.argv[1]
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(path + ".tmp", path)
time.sleep(3600)
"""


def write_pid_file(path: str, pid: int) -> None:
    """Write ``pid`` atomically so a polling test never reads a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def crash(status: int, reason: str) -> None:
    """Die immediately, like a segfaulting inference server (no cleanup, no response)."""
    print(f"upstream: crashing with status {status}: {reason}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


def spawn_grandchild(pid_file: str, timeout: float = 5.0) -> subprocess.Popen[bytes]:
    """Start a SIGTERM-ignoring grandchild in *our* process group and wait for its pid file.

    stdout/stderr are inherited on purpose: like an ``sh -c`` wrapper's child, the grandchild
    keeps the proxy's pipes open until it is killed.
    """
    try:
        os.unlink(pid_file)
    except FileNotFoundError:
        pass
    proc = subprocess.Popen(
        [sys.executable, "-c", GRANDCHILD_CODE, pid_file], stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while not os.path.exists(pid_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"upstream: grandchild failed to start (rc={proc.returncode})")
        time.sleep(0.005)
    return proc


class FaultyUpstream(DemoServer):
    """The demo server with the fault-injection hooks filled in."""

    def __init__(
        self,
        options: DemoOptions,
        *,
        ignore_sigterm: bool = False,
        exit_after: float | None = None,
        never_healthy: bool = False,
    ) -> None:
        super().__init__(options)
        self.ignore_sigterm = ignore_sigterm
        self.exit_after = exit_after
        self.never_healthy = never_healthy

    # ---------------------------------------------------------- lifecycle hooks

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """With ``--ignore-sigterm`` only SIGKILL (or SIGINT) stops us."""
        if self.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            loop.add_signal_handler(signal.SIGINT, self.stop)
        else:
            super().install_signal_handlers(loop)

    def on_listening(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arm ``--exit-after``, counted from the moment /health would first say ok."""
        if self.exit_after is not None:
            delay = max(0.0, self.ready_at - time.monotonic()) + self.exit_after
            loop.call_later(delay, crash, EXIT_AFTER_STATUS, "--exit-after elapsed")

    def is_healthy(self) -> bool:
        """``--never-healthy`` keeps /health at 503 forever."""
        return not self.never_healthy and super().is_healthy()

    # ---------------------------------------------------------- inference hooks

    async def before_inference(self, request: Request, body: dict[str, Any]) -> None:
        """Honour ``test_delay`` and, for non-streaming requests, ``test_crash_after``."""
        delay = body.get("test_delay")
        if isinstance(delay, int | float) and delay > 0:
            await asyncio.sleep(delay)
        if "test_crash_after" in body and body.get("stream") is not True:
            crash(CRASH_STATUS, "test_crash_after on a non-streaming request")

    async def on_stream_token(self, body: dict[str, Any], index: int) -> None:
        """Crash after ``test_crash_after`` tokens have been sent."""
        limit = body.get("test_crash_after")
        if isinstance(limit, int) and index >= limit:
            crash(CRASH_STATUS, f"test_crash_after={limit}")

    async def on_stream_end(self, body: dict[str, Any], n_tokens: int) -> None:
        """A reply shorter than ``test_crash_after`` still crashes before finishing."""
        if isinstance(body.get("test_crash_after"), int):
            crash(CRASH_STATUS, f"test_crash_after={body['test_crash_after']} (reply ended)")

    # ------------------------------------------------------------ extra routes

    def extra_route(self, request: Request) -> Handler | None:
        """Test endpoints; they answer even while the fake model is still loading."""
        path = request.path
        if path == "/echo-headers":
            return self.handle_echo_headers
        if path == "/echo" or path.startswith("/echo/"):
            return self.handle_echo
        if path == "/slow":
            return self.handle_slow
        if path == "/env":
            return self.handle_env
        if request.method == "POST" and b'"test_echo"' in request.body:
            return self.handle_echo  # any endpoint: show exactly what the proxy sent
        return None

    async def handle_echo_headers(self, request: Request, responder: Responder) -> None:
        """The headers exactly as received (lower-case names, repeats joined by ", ")."""
        await responder.send_json(200, request.headers_dict())

    async def handle_echo(self, request: Request, responder: Responder) -> None:
        """Everything about the request, to check path forwarding and body rewriting."""
        await responder.send_json(
            200,
            {
                "path": request.target,
                "method": request.method,
                "headers": request.headers_dict(),
                "body": request.body.decode("utf-8", errors="replace"),
                "body_length": len(request.body),
                "query": request.query,
            },
        )

    async def handle_slow(self, request: Request, responder: Responder) -> None:
        """``n`` chunks ``chunk-i\\n``, ``delay`` seconds apart, each flushed at once."""
        try:
            n = int(request.query_value("n", "5"))
            delay = float(request.query_value("delay", "0.1"))
        except ValueError:
            await responder.send_error(400, "n must be an int and delay a float")
            return
        if n < 0 or delay < 0:
            await responder.send_error(400, "n and delay must be >= 0")
            return
        await responder.start_stream("text/plain; charset=utf-8")
        for i in range(n):
            if i and delay:
                await asyncio.sleep(delay)
            await responder.write(f"chunk-{i}\n".encode())
        await responder.end_stream()

    async def handle_env(self, request: Request, responder: Responder) -> None:
        """The process environment, to check a model's ``env:`` settings reached it."""
        await responder.send_json(200, dict(os.environ))


def build_upstream_parser() -> argparse.ArgumentParser:
    """The demo's flags plus the fault-injection ones."""
    parser = build_parser(prog="upstream.py")
    group = parser.add_argument_group("fault injection (tests only)")
    group.add_argument("--pid-file", metavar="PATH", help="write our pid here on start")
    group.add_argument(
        "--ignore-sigterm", action="store_true", help="ignore SIGTERM; only SIGKILL stops us"
    )
    group.add_argument(
        "--grandchild",
        metavar="PIDFILE",
        help="spawn a SIGTERM-ignoring grandchild in our process group; it writes its pid here",
    )
    group.add_argument(
        "--exit-during-start",
        type=int,
        metavar="CODE",
        help="print fatal lines to stderr and exit with CODE before listening",
    )
    group.add_argument(
        "--exit-after",
        type=float,
        metavar="SECONDS",
        help=f"exit with status {EXIT_AFTER_STATUS} this long after becoming healthy",
    )
    group.add_argument("--never-healthy", action="store_true", help="/health is always 503")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point; fault flags that act before listening are handled here."""
    args = build_upstream_parser().parse_args(argv)
    if args.ignore_sigterm:  # as early as possible, so no SIGTERM window exists
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.pid_file:
        write_pid_file(args.pid_file, os.getpid())
    if args.exit_during_start is not None:
        print(f"upstream: loading model {args.model}", file=sys.stderr, flush=True)
        print("fatal: model file not found", file=sys.stderr, flush=True)
        print("upstream: failed to start, exiting", file=sys.stderr, flush=True)
        sys.exit(args.exit_during_start)
    if args.grandchild:
        # Deliberately never reaped or killed by us: that is the proxy's job under test.
        spawn_grandchild(args.grandchild)
    server = FaultyUpstream(
        options_from_args(args),
        ignore_sigterm=args.ignore_sigterm,
        exit_after=args.exit_after,
        never_healthy=args.never_healthy,
    )
    sys.exit(run(server))


if __name__ == "__main__":
    main()
