"""Test-only upstream: the demo server plus fault injection.

Integration tests spawn it as ``sys.executable tests/upstream.py --port N ...`` to get a real
child process that can misbehave on purpose: refuse to die on SIGTERM, leave a grandchild behind,
fail during start-up, crash while idle or mid-stream, never become healthy, or echo back exactly
what the proxy sent it. Everything the shipped demo does still works (same flags, same endpoints).

Extra flags: ``--pid-file``, ``--ignore-sigterm``, ``--grandchild PIDFILE``,
``--setsid-grandchild PIDFILE`` (one that also leaves the process group and session),
``--exit-during-start CODE``, ``--exit-after SECONDS``, ``--never-healthy``.

Extra request fields on the inference endpoints: ``"test_delay": S`` (wait S seconds before
answering) and ``"test_crash_after": N`` (streaming: send N tokens then ``os._exit(7)``; if the
reply has fewer tokens, crash after the last one, before the finish chunk; non-streaming: crash
without answering) and ``"test_stall_after": N`` (streaming: send N tokens, then nothing more,
keeping the connection open and ``/health`` answering: a hung model).

Extra endpoints (any method): ``/echo-headers`` (received headers as a JSON object keyed by
lower-case name), ``/echo`` and ``/echo/...`` (``{"path", "method", "headers", "body",
"body_length", "query"}``; ``path`` is the raw request target including any query string),
``"test_echo": true`` in a POST body on any path answers like ``/echo``;
``/slow?n=K&delay=S`` (K plain-text chunks ``chunk-i\\n``, S seconds apart) and ``/env``
(the process environment as JSON).

The other APIs local-AI clients speak, answered in their real shapes (enough for the official
``openai`` and ``anthropic`` SDKs to parse) and each carrying ``received``, a description of
what arrived (path, query, headers, the JSON body, or a multipart summary with each file's
name, size and sha256): ``/v1/responses`` (also streaming), ``/v1/messages`` (also
streaming) and ``/v1/messages/count_tokens`` (Anthropic), ``/v1/audio/transcriptions`` and
``/translations`` (multipart), ``/v1/audio/speech`` (``audio/mpeg`` bytes ``ID3`` + the
input), ``/v1/images/generations`` and ``/v1/images/edits`` (multipart), llama.cpp's
``/completion`` and ``/infill``, stable-diffusion's ``/sdapi/v1/txt2img`` and ``img2img``,
and GET ``/v1/audio/voices``, ``/props``, ``/sdapi/v1/loras``; ``/v1/tasks/run`` and the
versionless ``/responses``, ``/messages``... answer like their ``/v1`` forms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email.parser
import hashlib
import importlib.util
import json
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
    every upstream spawn in the test-suite; the demo package itself is standard-library only.
    So load the checkout's ``llamaswap/demo/`` by path when it is there (a fresh clone,
    installed or not), as a package named ``llamaswap.demo`` whose parent is never imported,
    and fall back to the installed package otherwise.
    """
    directory = os.path.join(_REPO_ROOT, "llamaswap", "demo")
    if not os.path.isfile(os.path.join(directory, "__init__.py")) or "llamaswap" in sys.modules:
        import llamaswap.demo

        return llamaswap.demo
    parent = ModuleType("llamaswap")  # a bare namespace: the real __init__ is not run
    parent.__path__ = [os.path.dirname(directory)]
    sys.modules["llamaswap"] = parent
    try:
        spec = importlib.util.spec_from_file_location(
            "llamaswap.demo", os.path.join(directory, "__init__.py"),
            submodule_search_locations=[directory])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while decorating
        spec.loader.exec_module(module)
    finally:
        if sys.modules.get("llamaswap") is parent:
            del sys.modules["llamaswap"]  # a later ``import llamaswap`` gets the real one
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
if sys.argv[2:] == ["setsid"]:
    os.setsid()
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


def spawn_grandchild(pid_file: str, timeout: float = 5.0,
                     setsid: bool = False) -> subprocess.Popen[bytes]:
    """Start a SIGTERM-ignoring grandchild in *our* process group (with ``setsid``: in a
    session of its own) and wait for its pid file.

    stdout/stderr are inherited on purpose: like an ``sh -c`` wrapper's child, the grandchild
    keeps the proxy's pipes open until it is killed.
    """
    try:
        os.unlink(pid_file)
    except FileNotFoundError:
        pass
    proc = subprocess.Popen(
        [sys.executable, "-c", GRANDCHILD_CODE, pid_file, *(["setsid"] if setsid else [])],
        stdin=subprocess.DEVNULL,
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
        drafts: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(options)
        self.ignore_sigterm = ignore_sigterm
        self.exit_after = exit_after
        self.never_healthy = never_healthy
        self.drafts = drafts

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

    def timings(self, prompt_tokens: int, completion_tokens: int,
                seconds: float) -> dict[str, float]:
        """With ``--draft-tokens``, llama-server's speculative decoding counts too."""
        timings = super().timings(prompt_tokens, completion_tokens, seconds)
        if self.drafts is not None:
            timings["draft_n"], timings["draft_n_accepted"] = self.drafts
        return timings

    # ---------------------------------------------------------- inference hooks

    async def before_inference(self, request: Request, body: dict[str, Any]) -> None:
        """Honour ``test_delay`` and, for non-streaming requests, ``test_crash_after``."""
        delay = body.get("test_delay")
        if isinstance(delay, int | float) and delay > 0:
            await asyncio.sleep(delay)
        if "test_crash_after" in body and body.get("stream") is not True:
            crash(CRASH_STATUS, "test_crash_after on a non-streaming request")

    async def on_stream_token(self, body: dict[str, Any], index: int) -> None:
        """Crash after ``test_crash_after`` tokens; go silent after ``test_stall_after``."""
        limit = body.get("test_crash_after")
        if isinstance(limit, int) and index >= limit:
            crash(CRASH_STATUS, f"test_crash_after={limit}")
        stall = body.get("test_stall_after")
        if isinstance(stall, int) and index >= stall:
            await asyncio.sleep(3600)  # connection open, process alive, /health still ok

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
        api_path = path[3:] if path.startswith("/v1/") else path
        return {
            "/responses": self.handle_responses,
            "/messages": self.handle_messages,
            "/messages/count_tokens": self.handle_count_tokens,
            "/audio/transcriptions": self.handle_transcription,
            "/audio/translations": self.handle_transcription,
            "/audio/speech": self.handle_speech,
            "/images/generations": self.handle_images,
            "/images/edits": self.handle_images,
            "/completion": self.handle_llama_completion,
            "/infill": self.handle_llama_completion,
            "/sdapi/v1/txt2img": self.handle_sdapi,
            "/sdapi/v1/img2img": self.handle_sdapi,
            "/sdapi/v1/loras": self.handle_received,
            "/audio/voices": self.handle_received,
            "/props": self.handle_received,
            "/tasks/run": self.handle_received,
        }.get(api_path)

    # ------------------------------------------------- the other APIs, echoing

    def received(self, request: Request) -> dict[str, Any]:
        """What arrived: path, query, headers, and the JSON body or a multipart summary."""
        seen: dict[str, Any] = {"path": request.target, "method": request.method,
                                "query": request.query, "headers": request.headers_dict(),
                                "body_length": len(request.body)}
        content_type = request.header("content-type") or ""
        if content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser().parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + request.body)
            fields: dict[str, str] = {}
            files: dict[str, Any] = {}
            for part in message.get_payload() or []:
                data = part.get_payload(decode=True) or b""
                name = part.get_param("name", header="content-disposition")
                filename = part.get_filename()
                if filename is None:
                    fields[name] = data.decode("utf-8", "replace")
                else:
                    files[name] = {"filename": filename, "size": len(data),
                                   "sha256": hashlib.sha256(data).hexdigest(),
                                   "content_type": part.get_content_type()}
            seen["fields"], seen["files"] = fields, files
        elif request.body[:1] == b"{":
            try:
                seen["json"] = json.loads(request.body)
            except ValueError:
                pass
        return seen

    async def handle_received(self, request: Request, responder: Responder) -> None:
        await responder.send_json(200, {"model": self.options.model,
                                        "received": self.received(request)})

    async def handle_responses(self, request: Request, responder: Responder) -> None:
        """OpenAI Responses API: ``output_text`` echoes the input; SSE when streaming."""
        seen = self.received(request)
        body = seen.get("json", {})
        await self.before_inference(request, body)  # honours test_delay
        prompt = body.get("input")
        text = self.reply_text(prompt if isinstance(prompt, str) else json.dumps(prompt))
        response_id = f"resp_{os.urandom(8).hex()}"
        message = {"type": "message", "id": f"msg_{os.urandom(8).hex()}", "status": "completed",
                   "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}
        words = len(text.split())
        done = {"id": response_id, "object": "response", "created_at": int(time.time()),
                "model": body.get("model", self.options.model), "status": "completed",
                "output": [message], "parallel_tool_calls": False, "tool_choice": "auto",
                "tools": [], "received": seen,
                "usage": {"input_tokens": 3, "output_tokens": words, "total_tokens": 3 + words,
                          "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 0}}}
        if body.get("stream") is not True:
            await responder.send_json(200, done)
            return
        await responder.start_stream("text/event-stream")
        events: list[dict[str, Any]] = [
            {"type": "response.created",
             "response": {**done, "status": "in_progress", "output": []}}]
        where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": []}
        events += [{"type": "response.output_item.added", "output_index": 0,
                    "item": {**message, "status": "in_progress", "content": []}},
                   {"type": "response.content_part.added", **where, "part": part}]
        tokens = text.split(" ")
        for index, token in enumerate(tokens):
            events.append({"type": "response.output_text.delta", **where, "logprobs": [],
                           "delta": token + (" " if index + 1 < len(tokens) else "")})
        events += [{"type": "response.output_text.done", **where, "text": text, "logprobs": []},
                   {"type": "response.content_part.done", **where,
                    "part": message["content"][0]},
                   {"type": "response.output_item.done", "output_index": 0, "item": message},
                   {"type": "response.completed", "response": done}]
        for number, event in enumerate(events):
            event["sequence_number"] = number
            await responder.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                                  .encode())
            await asyncio.sleep(self.options.token_delay)
        await responder.end_stream()

    async def handle_messages(self, request: Request, responder: Responder) -> None:
        """Anthropic Messages API, plain or streamed as its named SSE events."""
        seen = self.received(request)
        body = seen.get("json", {})
        await self.before_inference(request, body)  # honours test_delay
        messages = body.get("messages") or [{}]
        last = messages[-1].get("content", "") if isinstance(messages[-1], dict) else ""
        text = self.reply_text(last if isinstance(last, str) else json.dumps(last))
        message = {"id": f"msg_{os.urandom(8).hex()}", "type": "message", "role": "assistant",
                   "model": body.get("model", self.options.model),
                   "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                   "stop_sequence": None, "received": seen,
                   "usage": {"input_tokens": 3, "output_tokens": len(text.split())}}
        if body.get("stream") is not True:
            await responder.send_json(200, message)
            return
        await responder.start_stream("text/event-stream")
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": {**message, "content": [],
                                                  "stop_reason": None}},
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}}]
        for token in text.split(" "):
            events.append({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": token + " "}})
        events += [{"type": "content_block_stop", "index": 0},
                   {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                       "stop_sequence": None},
                    "usage": {"output_tokens": len(text.split())}},
                   {"type": "message_stop"}]
        for event in events:
            await responder.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                                  .encode())
            await asyncio.sleep(self.options.token_delay)
        await responder.end_stream()

    async def handle_count_tokens(self, request: Request, responder: Responder) -> None:
        seen = self.received(request)
        words = len(json.dumps(seen.get("json", {}).get("messages", [])).split())
        await responder.send_json(200, {"input_tokens": words, "received": seen})

    async def handle_transcription(self, request: Request, responder: Responder) -> None:
        seen = self.received(request)
        audio = seen.get("files", {}).get("file", {})
        await responder.send_json(200, {"text": f"{audio.get('size', 0)} bytes of audio",
                                        "received": seen})

    async def handle_speech(self, request: Request, responder: Responder) -> None:
        text = str(self.received(request).get("json", {}).get("input", ""))
        await responder.send(200, b"ID3" + text.encode(), "audio/mpeg")

    async def handle_images(self, request: Request, responder: Responder) -> None:
        seen = self.received(request)
        image = base64.b64encode(json.dumps(seen.get("files", {})).encode()).decode()
        await responder.send_json(200, {"created": int(time.time()),
                                        "data": [{"b64_json": image}], "received": seen})

    async def handle_llama_completion(self, request: Request, responder: Responder) -> None:
        seen = self.received(request)
        prompt = str(seen.get("json", {}).get("prompt", ""))
        await responder.send_json(200, {"content": self.reply_text(prompt),
                                        "model": self.options.model, "received": seen})

    async def handle_sdapi(self, request: Request, responder: Responder) -> None:
        seen = self.received(request)
        await responder.send_json(200, {"images": [base64.b64encode(b"PNG").decode()],
                                        "info": json.dumps(seen), "received": seen})

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
        "--setsid-grandchild",
        metavar="PIDFILE",
        help="spawn a SIGTERM-ignoring grandchild that calls setsid; it writes its pid here",
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
    group.add_argument("--draft-tokens", metavar="DRAFTED,ACCEPTED",
                       type=lambda v: tuple(int(n) for n in v.split(",", 1)),
                       help="report speculative decoding counts in every response's timings")
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
    if args.setsid_grandchild:
        spawn_grandchild(args.setsid_grandchild, setsid=True)
    server = FaultyUpstream(
        options_from_args(args),
        ignore_sigterm=args.ignore_sigterm,
        exit_after=args.exit_after,
        never_healthy=args.never_healthy,
        drafts=args.draft_tokens,
    )
    sys.exit(run(server))


if __name__ == "__main__":
    main()
