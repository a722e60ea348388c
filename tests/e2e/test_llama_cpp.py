"""End to end: llamaswap under twistd swapping two real llama.cpp servers.

Two tiny random-weight GGUF models (see ``tiny_gguf.py``) are served by
``python -m llama_cpp.server``; llamaswap runs as a real ``twistd`` subprocess and is driven
with the official ``openai`` SDK. The models generate garbage, so only structure is checked.
Each server is started with ``--model_alias`` equal to its llamaswap model ID, so the
``model`` field of a reply proves which server answered.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    STARTUP_TIMEOUT,
    ModelPair,
    answers_200,
    check_chat,
    check_stream,
    free_ports,
    http_get_json,
    kill_processes_mentioning,
    llamaswap_daemon,
    pid_alive,
    processes_mentioning,
    stop_process,
    tail,
    wait_until,
)
from openai import OpenAI
from tiny_gguf import write_tiny_llama

pytestmark = pytest.mark.e2e

def server_cmd(model_path: Path, alias: str, port: str) -> str:
    """The llama_cpp.server command line for one tiny model, small and fast.

    ``port`` is inserted verbatim, so it may be llamaswap's ``${PORT}`` macro.
    """
    model = shlex.join([sys.executable, "-m", "llama_cpp.server",
                        "--model", str(model_path), "--model_alias", alias])
    return (f"{model} --host 127.0.0.1 --port {port} --n_ctx 256 --n_batch 64 --n_threads 1"
            " --use_mlock False --verbose False")


TinyModels = ModelPair


@dataclass
class LlamaSwap:
    """A running llamaswap subprocess and where to reach it."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path
    models: TinyModels

    def client(self) -> OpenAI:
        """An SDK client pointed at llamaswap; no retries, so failures are not masked."""
        return OpenAI(base_url=f"{self.base_url}/v1", api_key="sk-e2e", max_retries=0,
                      timeout=STARTUP_TIMEOUT + 30)

    def running(self) -> list[dict[str, Any]]:
        """``GET /running``'s list of loaded models."""
        body = http_get_json(f"{self.base_url}/running")
        return list(body["running"])


@pytest.fixture
def tiny_models(tmp_path: Path) -> Iterator[TinyModels]:
    """Two different tiny models; any server still running one is killed afterwards."""
    models = TinyModels(a=tmp_path / "tiny-a.gguf", b=tmp_path / "tiny-b.gguf")
    write_tiny_llama(models.a, seed=1)
    write_tiny_llama(models.b, seed=2)
    assert models.a.stat().st_size < 10_000_000
    assert models.a.read_bytes() != models.b.read_bytes()
    yield models
    kill_processes_mentioning(models.needles)


@pytest.fixture
def llamaswap(tmp_path: Path, tiny_models: TinyModels) -> Iterator[LlamaSwap]:
    """llamaswap under ``twistd -n`` with both tiny models in the default swap group."""
    start_port = free_ports(2)
    config = {
        "healthCheckTimeout": 120,
        "startPort": start_port,
        "models": {
            name: {"cmd": server_cmd(path, name, "${PORT}"), "checkEndpoint": "/v1/models"}
            for name, path in (("tiny-a", tiny_models.a), ("tiny-b", tiny_models.b))
        },
    }
    try:
        with llamaswap_daemon(config, tmp_path) as (proc, base_url, log):
            yield LlamaSwap(proc, base_url, log, tiny_models)
    finally:
        kill_processes_mentioning(tiny_models.needles)


def test_tiny_model_served_directly(tmp_path: Path, tiny_models: TinyModels) -> None:
    """The tiny model works in llama_cpp.server on its own (no llamaswap involved)."""
    port = str(free_ports(1))
    log = tmp_path / "server.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            shlex.split(server_cmd(tiny_models.a, "tiny-a", port)),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: answers_200(f"{base_url}/v1/models") or proc.poll() is not None,
            STARTUP_TIMEOUT, "llama_cpp.server's /v1/models",
        )
        assert proc.poll() is None, f"server exited with {proc.returncode}:\n{tail(log)}"
        models = http_get_json(f"{base_url}/v1/models")
        assert [m["id"] for m in models["data"]] == ["tiny-a"]
        client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)
        check_chat(client, "tiny-a")
        check_stream(client, "tiny-a")
    finally:
        stop_process(proc)


def test_swaps_llama_cpp_servers_and_cleans_up(llamaswap: LlamaSwap) -> None:
    """Chat, stream, swap to the other model, then a clean SIGTERM shutdown."""
    models = llamaswap.models
    client = llamaswap.client()
    assert llamaswap.running() == []
    assert processes_mentioning(str(models.a)) == []

    # (a) the first request starts tiny-a and gets an answer from it.
    check_chat(client, "tiny-a")
    running = llamaswap.running()
    assert [(r["model"], r["state"]) for r in running] == [("tiny-a", "ready")], running
    pid_a = running[0]["pid"]
    # the server and its keeper (llamaswap's per-model parent) mention the model path
    assert pid_a in processes_mentioning(str(models.a))
    assert len(processes_mentioning(str(models.a))) == 2

    # (b) streaming through the proxy yields several SSE chunks from the same server.
    check_stream(client, "tiny-a")
    assert [r["pid"] for r in llamaswap.running()] == [pid_a], "tiny-a was restarted"

    # (c) tiny-b is in the same (default) swap group: using it stops tiny-a.
    check_chat(client, "tiny-b")
    running = llamaswap.running()
    assert [(r["model"], r["state"]) for r in running] == [("tiny-b", "ready")], running
    pid_b = running[0]["pid"]
    assert not pid_alive(pid_a), f"tiny-a's server (pid {pid_a}) survived the swap"
    assert processes_mentioning(str(models.a)) == []
    assert pid_b in processes_mentioning(str(models.b))
    assert len(processes_mentioning(str(models.b))) == 2

    # SIGTERM: twistd stops the service (and so every model), then re-raises the signal.
    llamaswap.proc.send_signal(signal.SIGTERM)
    try:
        returncode = llamaswap.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"llamaswap ignored SIGTERM for 30 s:\n{tail(llamaswap.log)}")
    assert returncode in (0, -signal.SIGTERM), tail(llamaswap.log)
    assert not pid_alive(pid_b), f"tiny-b's server (pid {pid_b}) outlived llamaswap"
    leftovers = {needle: processes_mentioning(needle) for needle in models.needles}
    assert leftovers == {str(models.a): [], str(models.b): []}, tail(llamaswap.log)
