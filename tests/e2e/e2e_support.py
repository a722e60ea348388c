"""Helpers for the end-to-end tests: ports, polling, /proc scans and OpenAI SDK checks.

Standard library only (plus the ``openai`` SDK for the assertion helpers), so a test can
watch real processes without psutil.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from openai import OpenAI

T = TypeVar("T")


REPO_ROOT = Path(__file__).resolve().parents[2]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
"""``twistd`` for this interpreter. (``python -m twisted`` is ``twist``, which has no ``-n``,
``--pidfile`` or SIGTERM re-raise, and ``twisted.scripts.twistd`` has no ``__main__``.)"""
STARTUP_TIMEOUT = 60.0
"""Seconds allowed for a process to start answering (imports take a few seconds)."""


@dataclass
class ModelPair:
    """The paths of the two tiny GGUF models of a test."""

    a: Path
    b: Path

    @property
    def needles(self) -> list[str]:
        """Strings that appear only in the command lines of these models' servers."""
        return [str(self.a), str(self.b)]


@contextmanager
def llamaswap_daemon(config: dict[str, Any], directory: Path, name: str = "llamaswap"
                     ) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """llamaswap under ``twistd -n`` on ``config`` (written to ``directory``), once its
    ``/health`` answers: ``(process, base URL, log file)``; stopped (SIGTERM) afterwards."""
    config_path = directory / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_ports(1)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log = directory / f"{name}.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "llamaswap", "-c", str(config_path),
             "-l", f"tcp:{port}:interface=127.0.0.1"],
            cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_200(f"{base_url}/health") or proc.poll() is not None,
                   STARTUP_TIMEOUT, "llamaswap's /health")
        assert proc.poll() is None, f"llamaswap exited with {proc.returncode}:\n{tail(log)}"
        yield proc, base_url, log
    finally:
        stop_process(proc, timeout=30)


def free_ports(count: int) -> int:
    """A base port ``p`` such that ``p .. p+count-1`` were all free a moment ago.

    llamaswap hands out ``${PORT}`` values consecutively from ``startPort``, so a config with
    several models needs a free run of ports, not just one.
    """
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no run of {count} free ports found")


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns something other than ``None``/``False``; return it.

    Raises ``TimeoutError`` naming ``what`` if the deadline passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """``GET url``; ``(status, body)``, with status 0 when the connection fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    """``GET url`` and decode the JSON body; asserts a 200."""
    status, body = http_get(url, timeout)
    assert status == 200, f"GET {url} answered {status}: {body[:500]!r}"
    return json.loads(body)


def answers_200(url: str) -> bool:
    """Whether ``GET url`` answers 200 right now."""
    return http_get(url, timeout=2.0)[0] == 200


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat[stat.rindex(")") + 2] not in "ZX"


def processes_mentioning(needle: str) -> list[int]:
    """PIDs of live processes (other than this one) whose command line contains ``needle``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if needle.encode() in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_processes_mentioning(needles: list[str]) -> list[int]:
    """SIGKILL every live process whose command line mentions one of ``needles``.

    Used in teardown only; the needles are unique temporary paths, so nothing else matches.
    Returns the PIDs it signalled.
    """
    killed: list[int] = []
    for needle in needles:
        for pid in processes_mentioning(needle):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM ``proc``, then SIGKILL it if it has not exited within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def tail(path: Path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a log file, for assertion messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"<cannot read {path}: {error}>"


CHAT = [{"role": "user", "content": "hello world, say something"}]


def check_chat(client: OpenAI, model: str, max_tokens: int = 8) -> None:
    """A non-streaming chat completion on ``model`` returns one well-formed assistant choice."""
    response = client.chat.completions.create(model=model, messages=CHAT, max_tokens=max_tokens)
    assert response.object == "chat.completion"
    assert response.model == model, "answered by the wrong model server"
    assert len(response.choices) == 1
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens


def check_stream(client: OpenAI, model: str, max_tokens: int = 8) -> int:
    """A streaming chat completion on ``model`` yields several well-formed chunks.

    Returns the number of chunks. Random weights mean the text is garbage, so only the
    structure is checked: one completion id, the role delta only in the first chunk and a
    finish reason only in the last. llama-server sends the role delta with the first token it
    emits, and a first token that is an incomplete UTF-8 sequence (the tiny model's byte
    tokens) is held back, so the stream may carry no role at all; greedy sampling keeps the
    output the same from run to run.
    """
    stream = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=max_tokens, stream=True,
        temperature=0, seed=42,
    )
    chunks = list(stream)
    assert len(chunks) >= 3, f"expected several chunks, got {len(chunks)}: {chunks}"
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk.model == model for chunk in chunks)
    roles = [(index, chunk.choices[0].delta.role) for index, chunk in enumerate(chunks)
             if chunk.choices[0].delta.role is not None]
    assert roles in ([], [(0, "assistant")]), roles
    assert any(chunk.choices[0].delta.content for chunk in chunks), chunks
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])
    return len(chunks)
