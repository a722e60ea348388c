"""End to end with llama.cpp's real ``llama-server`` (the program llama-swap users run).

llamaswap runs as a ``twistd`` subprocess; the models are tiny random-weight GGUF files
(``tiny_gguf.py``) served by the ``llama-server`` that ``build_llama_server.sh`` builds. The
models generate garbage, so answers are checked for structure and determinism only.

The slot cache tests follow issue 16's proof: two models in one swap group, a ~1,500-token
prompt on A, a swap to B and back; with ``slotCache`` A's first answer after the swap reuses
at least 90% of the prompt from the restored cache and is identical to the answer before
the swap (temperature 0, fixed seed); without it nothing is cached; a changed command is
not restored; a small ``maxBytes`` keeps the cache directory within budget.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    STARTUP_TIMEOUT,
    ModelPair,
    check_chat,
    check_stream,
    free_ports,
    http_get,
    http_get_json,
    kill_processes_mentioning,
    llamaswap_daemon,
    pid_alive,
    processes_mentioning,
    tail,
    wait_until,
)
from llama_server import llama_server_binary, llama_server_cmd
from openai import OpenAI
from tiny_gguf import write_tiny_llama

from llamaswap.slotcache.config import model_dir_name

pytestmark = pytest.mark.e2e

N_CTX = 2048
LONG_PROMPT = ("the tiny llama says hello world to the proxy and the model swap is ok " * 94)
"""About 1,500 tokens in the tiny models' vocabulary (checked by the tests)."""


Models = ModelPair


@dataclass
class LlamaSwap:
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path
    cache_root: Path

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key="sk-e2e", max_retries=0,
                      timeout=STARTUP_TIMEOUT + 60)

    def running(self) -> dict[str, dict[str, Any]]:
        return {r["model"]: r for r in http_get_json(f"{self.base_url}/running")["running"]}

    def metric(self, name: str, **labels: str) -> float:
        status, body = http_get(f"{self.base_url}/metrics")
        assert status == 200
        total = 0.0
        for line in body.decode().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def cache_dir(self, model: str) -> Path:
        return self.cache_root / model_dir_name(model)


@pytest.fixture(scope="session", autouse=True)
def built_llama_server() -> Path:
    """The binary, found or built once before any test runs (a build never runs on the reactor)."""
    return llama_server_binary()


@pytest.fixture
def models(tmp_path: Path) -> Iterator[Models]:
    """Two tiny models trained for a context long enough for the long prompt."""
    found = Models(a=tmp_path / "model-a.gguf", b=tmp_path / "model-b.gguf")
    write_tiny_llama(found.a, seed=1, n_ctx_train=N_CTX)
    write_tiny_llama(found.b, seed=2, n_ctx_train=N_CTX)
    yield found
    kill_processes_mentioning(found.needles)


def model_entry(model: Path, alias: str, slot_cache: Any = None, extra: str = "",
                slots: int = 1) -> dict[str, Any]:
    cache = " --slot-save-path ${SLOT_CACHE_DIR}" if slot_cache else ""
    entry: dict[str, Any] = {"cmd": llama_server_cmd(llama_server_binary(), model, alias,
                                                     "${PORT}", ctx=N_CTX, slots=slots,
                                                     extra=extra + cache)}
    if slot_cache:
        entry["slotCache"] = slot_cache
    return entry


@contextmanager
def running_llamaswap(tmp_path: Path, models: dict[str, Any],
                      slot_cache: dict[str, Any] | None = None,
                      name: str = "llamaswap") -> Iterator[LlamaSwap]:
    """llamaswap under ``twistd -n`` with ``models`` in the default swap group.

    Saves while idle are off unless a test turns them on (``slot_cache`` or a model's
    ``idleSave``): the tests that count stop-time saves must not depend on how long the
    machine takes between two requests."""
    cache_root = tmp_path / "slot-cache"
    config = {"healthCheckTimeout": 120, "startPort": free_ports(len(models)),
              "slotCache": {"dir": str(cache_root), "idleSave": False, **(slot_cache or {})},
              "models": models}
    with llamaswap_daemon(config, tmp_path, name) as (proc, base_url, log):
        yield LlamaSwap(proc, base_url, log, cache_root)


def ask(swap: LlamaSwap, model: str, prompt: str = LONG_PROMPT) -> tuple[str, int, int]:
    """``(answer, prompt tokens, cached prompt tokens)`` of a deterministic completion."""
    response = swap.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=8,
        temperature=0, seed=42)
    assert response.model == model, "answered by the wrong model server"
    usage = response.usage
    assert usage is not None
    details = usage.prompt_tokens_details
    cached = details.cached_tokens if details is not None and details.cached_tokens else 0
    return response.choices[0].message.content or "", usage.prompt_tokens, cached


def cache_files(directory: Path) -> dict[str, int]:
    if not directory.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in directory.iterdir() if p.suffix == ".bin"}


# -- the real llama-server behind llamaswap ------------------------------------------------


def test_llama_server_swaps_serves_and_exposes_its_own_endpoints(
        tmp_path: Path, models: Models) -> None:
    config = {"A": model_entry(models.a, "A"), "B": model_entry(models.b, "B")}
    with running_llamaswap(tmp_path, config) as swap:
        client = swap.client()
        check_chat(client, "A")
        check_stream(client, "A")
        running = swap.running()
        assert list(running) == ["A"] and running["A"]["state"] == "ready"
        assert "slotCache" not in running["A"]
        pid_a = running["A"]["pid"]
        assert pid_a in processes_mentioning(str(models.a))

        # llama-server's own endpoints, reached through llamaswap
        assert http_get(f"{swap.base_url}/upstream/A/health")[0] == 200
        props = http_get_json(f"{swap.base_url}/upstream/A/props")
        assert props["total_slots"] == 1
        assert props["default_generation_settings"]["n_ctx"] == N_CTX
        assert props["model_path"] == str(models.a)
        slots = http_get_json(f"{swap.base_url}/upstream/A/slots")
        assert [s["id"] for s in slots] == [0] and slots[0]["n_prompt_tokens"] > 0

        # B is in the same swap group: it replaces A
        check_chat(client, "B")
        assert list(swap.running()) == ["B"]
        wait_until(lambda: not pid_alive(pid_a), 10, "A's llama-server to exit")
        assert processes_mentioning(str(models.a)) == []

        swap.proc.send_signal(signal.SIGTERM)
        assert swap.proc.wait(timeout=30) in (0, -signal.SIGTERM), tail(swap.log)
    assert processes_mentioning(str(models.b)) == [], tail(swap.log)


# -- the slot cache ------------------------------------------------------------------------


def test_slot_cache_brings_the_prompt_back_after_a_swap(tmp_path: Path, models: Models) -> None:
    config = {"A": model_entry(models.a, "A", True), "B": model_entry(models.b, "B", True)}
    with running_llamaswap(tmp_path, config) as swap:
        before, prompt_tokens, cached = ask(swap, "A")
        assert 1300 <= prompt_tokens <= 1900, prompt_tokens
        assert cached == 0
        ask(swap, "B", "hello world")  # the swap saves A's slot first
        files = cache_files(swap.cache_dir("A"))
        assert list(files) == ["slot-0.bin"] and files["slot-0.bin"] > 100_000
        assert (swap.cache_dir("A") / "manifest.json").is_file()

        after, prompt_again, cached = ask(swap, "A")
        assert prompt_again == prompt_tokens
        assert cached >= 0.9 * prompt_tokens, (cached, prompt_tokens)
        assert after == before

        running = swap.running()
        assert running["A"]["slotCache"]["bytes"] > 0
        assert running["A"]["slotCache"]["last"]["action"] == "verify"
        assert running["A"]["slotCache"]["last"]["helped"] is True
        assert swap.metric("llamaswap_slot_cache_operations_total", model="A",
                           operation="save") == 1
        assert swap.metric("llamaswap_slot_cache_operations_total", model="A",
                           operation="restore") == 1
        assert swap.metric("llamaswap_slot_cache_tokens_total", model="A",
                           operation="restore") >= prompt_tokens
        assert swap.metric("llamaswap_slot_cache_restore_checks_total", model="A",
                           helped="true") == 1
        log = swap.log.read_text()
        assert "model=A served from a restored slot cache" in log
        assert "did not help" not in log


def test_a_save_while_idle_makes_the_stop_skip_its_save(tmp_path: Path, models: Models) -> None:
    """``idleSave``: A's slot is saved once A is idle; the swap then finds it current and
    writes nothing, and A's cache still comes back (docs/slot-cache.md)."""
    config = {"A": model_entry(models.a, "A", {"enabled": True, "idleSave": 0.5}),
              "B": model_entry(models.b, "B")}
    with running_llamaswap(tmp_path, config) as swap:
        before, prompt_tokens, _ = ask(swap, "A")
        wait_until(lambda: swap.metric("llamaswap_slot_cache_operations_total", model="A",
                                       operation="idle_save") == 1, 60, "A's idle save")
        assert list(cache_files(swap.cache_dir("A"))) == ["slot-0.bin"]
        assert swap.running()["A"]["slotCache"]["last"]["idle"] is True
        ask(swap, "B", "hello world")
        assert swap.metric("llamaswap_slot_cache_operations_total", model="A",
                           operation="save_skipped") == 1
        assert swap.metric("llamaswap_slot_cache_operations_total", model="A",
                           operation="save") == 0
        assert "A: slot cache current: saved" in swap.log.read_text()
        assert "ago while idle" in swap.log.read_text()

        after, prompt_again, cached = ask(swap, "A")
        assert prompt_again == prompt_tokens
        assert cached >= 0.9 * prompt_tokens, (cached, prompt_tokens)
        assert after == before
        assert swap.metric("llamaswap_slot_cache_restore_checks_total", model="A",
                           helped="true") == 1

        # Used with another prompt: changed, so it is saved again (by the stop, or by an
        # idle save if one came first) and the cache holds the new, short prompt.
        ask(swap, "A", "hello world, a different prompt")
        ask(swap, "B", "hello world")
        saves = sum(swap.metric("llamaswap_slot_cache_operations_total", model="A",
                                operation=op) for op in ("save", "idle_save"))
        assert saves == 2
        manifest = json.loads((swap.cache_dir("A") / "manifest.json").read_text())
        assert 0 < sum(s["tokens"] for s in manifest["slots"]) < prompt_tokens // 4


def test_a_restored_cache_left_unused_is_current_at_the_next_stop(
        tmp_path: Path, models: Models) -> None:
    """After a restore, llama-server's /slots shows the slot as restored; nothing changed
    it, so the stop keeps the files as they are (no save, no lost cache)."""
    config = {"A": model_entry(models.a, "A", {"enabled": True, "idleSave": False}),
              "B": model_entry(models.b, "B")}
    with running_llamaswap(tmp_path, config) as swap:
        _, prompt_tokens, _ = ask(swap, "A")
        ask(swap, "B", "hello world")
        assert swap.metric("llamaswap_slot_cache_operations_total", model="A",
                           operation="save") == 1
        status, _ = http_get(f"{swap.base_url}/upstream/A/health")  # loads A: a restore
        assert status == 200
        ask(swap, "B", "hello world again")
        assert swap.metric("llamaswap_slot_cache_operations_total", model="A",
                           operation="save_skipped") == 1
        assert swap.metric("llamaswap_slot_cache_operations_total", model="A",
                           operation="idle_save") == 0
        assert "restored" in swap.log.read_text().split("A: slot cache current:")[1][:40]
        _, _, cached = ask(swap, "A")
        assert cached >= 0.9 * prompt_tokens, (cached, prompt_tokens)


def test_without_slot_cache_nothing_is_cached_after_a_swap(tmp_path: Path,
                                                          models: Models) -> None:
    config = {"A": model_entry(models.a, "A"), "B": model_entry(models.b, "B")}
    with running_llamaswap(tmp_path, config) as swap:
        before, prompt_tokens, _ = ask(swap, "A")
        ask(swap, "B", "hello world")
        after, _, cached = ask(swap, "A")
        assert cached == 0
        assert after == before  # the same model, recomputed: only the speed differs
        assert not swap.cache_root.exists() or cache_files(swap.cache_dir("A")) == {}


def test_a_changed_command_is_not_restored(tmp_path: Path, models: Models) -> None:
    first = {"A": model_entry(models.a, "A", True), "B": model_entry(models.b, "B")}
    with running_llamaswap(tmp_path, first, name="first") as swap:
        ask(swap, "A")
        ask(swap, "B", "hello world")
        assert cache_files(swap.cache_dir("A"))
    changed = {"A": model_entry(models.a, "A", True, extra="--batch-size 256"),
               "B": model_entry(models.b, "B")}
    with running_llamaswap(tmp_path, changed, name="second") as swap:
        _, _, cached = ask(swap, "A")
        assert cached == 0
        assert swap.metric("llamaswap_slot_cache_fingerprint_mismatches_total", model="A") == 1
        assert swap.metric("llamaswap_slot_cache_operations_total", model="A",
                           operation="restore") == 0
        assert "not restored, the launch changed (command)" in swap.log.read_text()


def test_a_small_budget_keeps_the_cache_directory_within_it(tmp_path: Path,
                                                            models: Models) -> None:
    budget = 300_000  # ~880 tokens take ~0.45 MB (0.5 KB a token), ~100 tokens ~0.05 MB
    config = {"A": model_entry(models.a, "A", {"enabled": True, "maxBytes": budget}, slots=2),
              "B": model_entry(models.b, "B")}
    with running_llamaswap(tmp_path, config) as swap:
        ask(swap, "A", LONG_PROMPT[:len(LONG_PROMPT) * 55 // 94])  # 2 slots: 1,024 tokens each
        ask(swap, "A", "hello world, say something " * 20)  # the second, newer slot
        ask(swap, "B", "hello world")
        files = cache_files(swap.cache_dir("A"))
        assert 0 < sum(files.values()) <= budget, files
        assert len(files) == 1
        assert swap.metric("llamaswap_slot_cache_evictions_total", model="A") == 1
        _, _, cached = ask(swap, "A", "hello world, say something " * 20)
        assert cached > 0  # the slot kept is the one used last


def test_a_model_without_health_check_is_restored_before_it_is_ready(
        tmp_path: Path, models: Models) -> None:
    config = {"A": {**model_entry(models.a, "A", True), "checkEndpoint": "none"},
              "B": model_entry(models.b, "B")}
    with running_llamaswap(tmp_path, config) as swap:
        before, prompt_tokens, _ = ask(swap, "A")
        ask(swap, "B", "hello world")
        after, _, cached = ask(swap, "A")
        assert cached >= 0.9 * prompt_tokens, (cached, prompt_tokens)
        assert after == before
        assert swap.metric("llamaswap_slot_cache_restore_checks_total", model="A",
                           helped="true") == 1
        assert "no health check: llama-server answered /health after" in swap.log.read_text()


# -- sliding-window attention (Gemma 2) -----------------------------------------------------

SLIDING_WINDOW = 64
"""Tokens a sliding-window layer of the test's Gemma 2 sees: far fewer than the prompt."""


@pytest.mark.parametrize("swa_full", [False, True], ids=["default", "swa-full"])
def test_what_a_restore_does_for_a_sliding_window_model(tmp_path: Path, swa_full: bool) -> None:
    """llama.cpp keeps a sliding-window layer's cache only for the last window of tokens
    (and saves only that). Without ``--swa-full`` llama-server accepts the restore and then
    processes the whole prompt again; llamaswap's verification counts that as a restore
    that did not help. With ``--swa-full`` the restored cache is reused
    (docs/slot-cache.md has what else was seen)."""
    gemma, small = tmp_path / "gemma2.gguf", tmp_path / "small.gguf"
    write_tiny_llama(gemma, seed=3, n_ctx_train=N_CTX, sliding_window=SLIDING_WINDOW)
    write_tiny_llama(small, seed=4, n_ctx_train=N_CTX)
    extra = "--swa-full" if swa_full else ""
    config = {"G": model_entry(gemma, "G", True, extra=extra), "B": model_entry(small, "B")}
    try:
        with running_llamaswap(tmp_path, config) as swap:
            _, prompt_tokens, _ = ask(swap, "G")
            ask(swap, "B", "hello world")
            _, _, cached = ask(swap, "G")
            restored = swap.metric("llamaswap_slot_cache_tokens_total", model="G",
                                   operation="restore")
            assert restored >= prompt_tokens  # llama-server accepted the restore either way
            last = swap.running()["G"]["slotCache"]["last"]
            assert last["action"] == "verify" and last["cached_tokens"] == cached
            helped = swap.metric("llamaswap_slot_cache_restore_checks_total", model="G",
                                 helped="true")
            not_helped = swap.metric("llamaswap_slot_cache_restore_checks_total", model="G",
                                     helped="false")
            if swa_full:
                assert cached >= 0.9 * prompt_tokens, (cached, prompt_tokens)
                assert (helped, not_helped, last["helped"]) == (1, 0, True)
            else:
                assert cached == 0
                assert (helped, not_helped, last["helped"]) == (0, 1, False)
                assert "the restore did not help" in swap.log.read_text()
    finally:
        kill_processes_mentioning([str(gemma), str(small)])
