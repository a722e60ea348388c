"""Black-box tests of the demo model server and the fault-injecting test upstream.

Both run as real subprocesses on free loopback ports and are driven with plain ``http.client``:
the integration tests of llamaswap rely on these programs behaving exactly as described here
(streams really are incremental, signals and exit codes are as documented), so they are checked
on their own first.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = REPO_ROOT / "tests" / "upstream.py"
DEMO = [sys.executable, "-m", "llamaswap.demo"]
TEST_UPSTREAM = [sys.executable, str(UPSTREAM)]


def free_port() -> int:
    """Ask the OS for a currently free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true or fail the test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Server:
    """A spawned server process and where its output goes."""

    proc: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def connection(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection; ``body`` is JSON-encoded unless it is bytes."""
        conn = self.connection()
        try:
            data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, data = self.request(method, path, body)
        return status, json.loads(data)


Spawn = Callable[..., Server]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start servers in their own session; kill each whole process group on teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def _spawn(base: list[str], *args: str, wait: bool = True) -> Server:
        port = free_port()
        n = len(procs)
        out, err = tmp_path / f"stdout-{n}.log", tmp_path / f"stderr-{n}.log"
        pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
        with out.open("wb") as fout, err.open("wb") as ferr:
            proc = subprocess.Popen(
                [*base, "--port", str(port), *args],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=ferr,
                start_new_session=True,
            )
        procs.append(proc)
        server = Server(proc, port, out, err)
        if wait:
            wait_listening(server)
        return server

    yield _spawn

    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def wait_listening(server: Server, timeout: float = 5.0) -> None:
    """Wait until the server accepts connections, failing early if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return
        except OSError:
            if server.proc.poll() is not None:
                pytest.fail(f"server exited with {server.proc.returncode}: {server.stderr}")
            if time.monotonic() > deadline:
                pytest.fail("server did not start listening")
            time.sleep(0.002)


def chat_body(text: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {"model": "x", "messages": [{"role": "user", "content": text}], **extra}


def read_sse(resp: http.client.HTTPResponse) -> list[tuple[float, str]]:
    """Read ``data:`` payloads of an event stream as (arrival time, payload) pairs."""
    events: list[tuple[float, str]] = []
    while True:
        line = resp.readline()
        if not line:
            return events
        if line.startswith(b"data: "):
            events.append((time.monotonic(), line[6:].strip().decode()))


# --------------------------------------------------------------------------- the shipped demo


def test_demo_module_does_not_import_twisted() -> None:
    """The demo must start fast; Twisted alone would add a large share of the start-up time."""
    code = "import sys, llamaswap.demo; print(sorted(m for m in sys.modules if 'twisted' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_health_is_503_during_startup_delay_then_200(spawn: Spawn) -> None:
    t0 = time.monotonic()
    server = spawn(DEMO, "--startup-delay", "0.8", "--model", "tiny")
    assert time.monotonic() - t0 < 0.8, "must listen immediately, not after the delay"
    assert server.json("GET", "/health") == (503, {"status": "loading"})
    status, err = server.json("POST", "/v1/chat/completions", chat_body())
    assert status == 503 and err["error"]["type"] == "unavailable_error"
    wait_for(lambda: server.request("GET", "/health")[0] == 200, what="healthy")
    assert server.json("GET", "/health") == (200, {"status": "ok"})
    assert time.monotonic() - t0 >= 0.8
    assert "demo: model=tiny listening on 127.0.0.1:" in server.stdout


def test_models_and_non_streaming_chat(spawn: Spawn) -> None:
    server = spawn(DEMO, "--model", "tiny")
    status, models = server.json("GET", "/v1/models")
    assert status == 200
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["object"] == "model"

    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "hello   world"}]},
    ]
    status, resp = server.json("POST", "/v1/chat/completions", {"messages": messages})
    assert status == 200
    assert resp["object"] == "chat.completion"
    assert resp["model"] == "tiny"
    assert resp["id"].startswith("chatcmpl-")
    (choice,) = resp["choices"]
    assert choice["message"] == {"role": "assistant", "content": "You said: hello world"}
    assert choice["finish_reason"] == "stop"
    usage = resp["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # one log line per request, flushed as it happens
    wait_for(lambda: '"POST /v1/chat/completions" 200' in server.stdout, what="request log line")


def test_index_page_answers_like_llama_server(spawn: Spawn) -> None:
    """llama-swap's UI loads a model with ``GET /upstream/<model>/`` and reports any non-2xx as
    a failed load: the demo answers ``/`` with a page, as llama-server does."""
    server = spawn(DEMO, "--model", "<b>tiny</b>")
    status, headers, data = server.request("GET", "/?_=1796461371401")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>&lt;b&gt;tiny&lt;/b&gt;</h1>" in data.decode()
    status, headers, data = server.request("HEAD", "/")
    assert (status, data) == (200, b"")
    assert int(headers["content-length"]) > 0
    status, _ = server.json("POST", "/")
    assert status == 405


def test_fixed_reply_max_tokens_and_completions(spawn: Spawn) -> None:
    server = spawn(DEMO, "--reply", "a b c d e f", "--max-tokens", "4", "--token-delay", "0")
    status, resp = server.json("POST", "/v1/chat/completions", chat_body())
    assert resp["choices"][0]["message"]["content"] == "a b c d"
    assert resp["choices"][0]["finish_reason"] == "length"

    status, resp = server.json("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert status == 200
    assert resp["object"] == "text_completion"
    assert resp["choices"][0]["text"] == "a b"
    assert resp["usage"]["completion_tokens"] == 2

    conn = server.connection()
    conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "x", "stream": True}))
    resp_stream = conn.getresponse()
    payloads = [p for _, p in read_sse(resp_stream)]
    conn.close()
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "a b c d"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_streaming_chat_is_incremental(spawn: Spawn) -> None:
    server = spawn(DEMO, "--token-delay", "0.2", "--reply", "one two three four five")
    conn = server.connection()
    body = chat_body(stream=True, stream_options={"include_usage": True})
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body))
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    events = read_sse(resp)
    conn.close()

    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(p) for _, p in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content_times = [
        t
        for (t, _), c in zip(events, chunks, strict=False)
        if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "one two three four five"
    assert len(content_times) == 5  # one token per event
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    # The first token arrives long before the last one is even produced: no buffering.
    first, last = content_times[0] - t0, content_times[-1] - t0
    assert first < 0.35, first
    assert last >= 0.75, last
    assert all(b - a > 0.1 for a, b in zip(content_times, content_times[1:], strict=False))


def test_200_concurrent_streams(spawn: Spawn) -> None:
    """Benchmarks drive hundreds of simultaneous streams through the proxy to this server."""
    reply = " ".join(f"w{i}" for i in range(10))
    server = spawn(DEMO, "--quiet", "--token-delay", "0.05", "--reply", reply)

    def one_stream(_: int) -> str:
        conn = server.connection(timeout=10)
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(stream=True)))
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=200) as pool:
        bodies = list(pool.map(one_stream, range(200)))
    elapsed = time.monotonic() - t0
    assert all(body.endswith("data: [DONE]\n\n") for body in bodies)
    assert all(body.count("data: ") == 13 for body in bodies)  # role + 10 tokens + stop + DONE
    assert elapsed < 4.0, f"200 streams of ~0.45 s each took {elapsed:.2f} s: not concurrent"


def test_keep_alive_serves_several_requests_on_one_connection(spawn: Spawn) -> None:
    server = spawn(DEMO, "--token-delay", "0")
    conn = server.connection()
    try:
        for i in range(3):
            body = chat_body(f"n{i}", stream=bool(i % 2))
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body))
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200
            assert f"n{i}".encode() in data
        conn.request("GET", "/health")
        assert conn.getresponse().read() == b'{"status":"ok"}'
    finally:
        conn.close()


def test_embeddings(spawn: Spawn) -> None:
    server = spawn(DEMO)
    status, resp = server.json("POST", "/v1/embeddings", {"input": "hello", "dimensions": 8})
    assert status == 200
    assert resp["object"] == "list"
    (item,) = resp["data"]
    assert item["object"] == "embedding" and len(item["embedding"]) == 8
    assert abs(sum(v * v for v in item["embedding"]) - 1.0) < 1e-3

    status, resp2 = server.json("POST", "/v1/embeddings", {"input": ["hello", "bye"]})
    assert [len(d["embedding"]) for d in resp2["data"]] == [16, 16]
    assert resp2["data"][0]["embedding"] != resp2["data"][1]["embedding"]
    status, again = server.json("POST", "/v1/embeddings", {"input": ["hello", "bye"]})
    assert again["data"] == resp2["data"]  # deterministic

    # the official openai client asks for base64 by default
    body = {"input": "hello", "encoding_format": "base64"}
    status, b64 = server.json("POST", "/v1/embeddings", body)
    raw = base64.b64decode(b64["data"][0]["embedding"])
    floats = struct.unpack("<16f", raw)
    assert floats == pytest.approx(resp2["data"][0]["embedding"], abs=1e-6)


def test_rerank(spawn: Spawn) -> None:
    server = spawn(DEMO)
    docs = ["a blue car", "red apples are sweet", "apples"]
    for path in ("/v1/rerank", "/rerank"):
        status, resp = server.json("POST", path, {"query": "sweet red apples", "documents": docs})
        assert status == 200
        results = resp["results"]
        assert sorted(r["index"] for r in results) == [0, 1, 2]
        assert results[0]["index"] == 1
        scores = [r["relevance_score"] for r in results]
        assert scores == sorted(scores, reverse=True)
    body = {"query": "q", "documents": docs, "top_n": 1}
    assert len(server.json("POST", "/v1/rerank", body)[1]["results"]) == 1


def test_errors_are_json(spawn: Spawn) -> None:
    server = spawn(DEMO, "--quiet")
    status, headers, data = server.request("POST", "/v1/chat/completions", b"{not json")
    assert status == 400
    assert headers["content-type"] == "application/json"
    err = json.loads(data)["error"]
    assert err["type"] == "invalid_request_error" and "JSON" in err["message"]

    status, resp = server.json("GET", "/nope")
    assert status == 404 and "error" in resp
    status, resp = server.json("GET", "/v1/chat/completions")
    assert status == 405 and "error" in resp
    time.sleep(0.05)
    assert server.stdout == ""  # --quiet


def test_sigterm_exits_promptly_with_status_0_mid_stream(spawn: Spawn) -> None:
    server = spawn(DEMO, "--token-delay", "1")
    conn = server.connection()
    conn.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(stream=True)))
    resp = conn.getresponse()
    assert resp.readline().startswith(b"data: ")  # a stream is in flight
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=2) == 0
    assert time.monotonic() - t0 < 1.0
    conn.close()


# ------------------------------------------------------------------- the test-only upstream


def test_upstream_exit_during_start(spawn: Spawn) -> None:
    server = spawn(TEST_UPSTREAM, "--exit-during-start", "42", wait=False)
    assert server.proc.wait(timeout=5) == 42
    assert "fatal: model file not found" in server.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=0.5).close()


def test_upstream_grandchild_stays_in_our_process_group(spawn: Spawn, tmp_path: Path) -> None:
    gc_file, pid_file = tmp_path / "grandchild.pid", tmp_path / "upstream.pid"
    server = spawn(TEST_UPSTREAM, "--grandchild", str(gc_file), "--pid-file", str(pid_file))
    assert int(pid_file.read_text()) == server.proc.pid
    gc_pid = int(gc_file.read_text())  # written before the upstream starts listening
    assert gc_pid != server.proc.pid
    assert pid_alive(gc_pid)
    assert os.getpgid(gc_pid) == os.getpgid(server.proc.pid) == server.proc.pid
    os.kill(gc_pid, signal.SIGTERM)  # ignored
    time.sleep(0.1)
    assert pid_alive(gc_pid)
    # the upstream itself exits on SIGTERM, leaving the grandchild behind: the proxy's problem
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=2) == 0
    assert pid_alive(gc_pid)
    os.killpg(server.proc.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(gc_pid), what="grandchild to die")


def test_upstream_ignore_sigterm(spawn: Spawn) -> None:
    server = spawn(TEST_UPSTREAM, "--ignore-sigterm")
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert server.proc.poll() is None
    assert server.request("GET", "/health")[0] == 200
    server.proc.kill()
    assert server.proc.wait(timeout=2) == -signal.SIGKILL


def test_upstream_crash_mid_stream(spawn: Spawn) -> None:
    server = spawn(TEST_UPSTREAM, "--token-delay", "0.01", "--reply", "a b c d e f")
    conn = server.connection()
    body = chat_body(stream=True, test_crash_after=3)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body))
    resp = conn.getresponse()
    lines = []
    try:
        while line := resp.readline():  # ends early: the chunked body never terminates
            lines.append(line)
    except http.client.IncompleteRead:
        pass
    conn.close()
    payloads = [line[6:].strip() for line in lines if line.startswith(b"data: ")]
    assert b"[DONE]" not in payloads
    chunks = [json.loads(p) for p in payloads]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert [c for c in contents if c] == ["a", " b", " c"]
    assert server.proc.wait(timeout=2) == 7


def test_upstream_test_delay_and_never_healthy(spawn: Spawn) -> None:
    server = spawn(TEST_UPSTREAM, "--never-healthy")
    assert server.json("GET", "/health") == (503, {"status": "loading"})
    healthy = spawn(TEST_UPSTREAM, "--reply", "ok")
    t0 = time.monotonic()
    status, resp = healthy.json("POST", "/v1/chat/completions", chat_body(test_delay=0.3))
    assert status == 200 and resp["choices"][0]["message"]["content"] == "ok"
    assert time.monotonic() - t0 >= 0.3


def test_upstream_exit_after(spawn: Spawn) -> None:
    server = spawn(TEST_UPSTREAM, "--startup-delay", "0.2", "--exit-after", "0.2")
    t0 = time.monotonic()
    assert server.request("GET", "/health")[0] == 503
    assert server.proc.wait(timeout=3) == 3
    assert time.monotonic() - t0 >= 0.3


def test_upstream_echo_endpoints_and_slow(spawn: Spawn) -> None:
    server = spawn(TEST_UPSTREAM)
    status, headers = server.json("GET", "/echo-headers")
    assert status == 200 and headers["host"] == f"127.0.0.1:{server.port}"

    raw = b'{"model":"x","a":1}'
    status, _, data = server.request("POST", "/echo/sub/path?q=1", raw, {"X-Test": "yes"})
    echo = json.loads(data)
    assert echo["path"] == "/echo/sub/path?q=1"
    assert echo["method"] == "POST"
    assert echo["headers"]["x-test"] == "yes"
    assert echo["headers"]["content-length"] == str(len(raw))
    assert echo["body"] == raw.decode()

    conn = server.connection()
    t0 = time.monotonic()
    conn.request("GET", "/slow?n=3&delay=0.2")
    resp = conn.getresponse()
    arrivals = []
    while line := resp.readline():
        arrivals.append((line, time.monotonic() - t0))
    conn.close()
    assert [line for line, _ in arrivals] == [b"chunk-0\n", b"chunk-1\n", b"chunk-2\n"]
    assert arrivals[0][1] < 0.15 and arrivals[-1][1] >= 0.38
