"""Slot cache benchmark: time to first token on returning to a model after a swap.

Real llamaswap (``twistd``), real llama.cpp ``llama-server`` (built by
``tests/e2e/build_llama_server.sh``), a random-weight llama model of a few hundred MB that
this script writes, and a 2,000-token prompt. Model A (the big one) and B (a tiny one) share
a swap group. One run measures both modes side by side:

- without ``slotCache``: A answers the prompt, B replaces A, A comes back and pays the whole
  prefill again;
- with ``slotCache``: the same, but A's slot is saved before it stops and restored before it
  is ready again.

Per mode it prints the first answer's time to first token, the time to first token on
returning to A, what A's first load took (spawn to ready; llama-server runs its warm-up,
which touches every weight, as it does by default) and, with the cache, what the save added
to the swap (and how much of it was llama-server writing the file) and the restore to the
start. Goals (issue 16): the return at most 0.1x the uncached one, the save at most 10% of
the load.

With the cache, A is then left idle until its save while idle (``idleSave``, 1 s) is done,
B replaces it again and A comes back once more: the second row of that mode is this idle
gap, where the stop finds the cache current and only checks ``GET /slots``. It shows what
the idle save itself took (in the background) and what the stop still added.

``--cold`` adds both modes again with the kernel's page cache emptied (``sync; echo 3 >
/proc/sys/vm/drop_caches``) before each load of A, as a swap on a machine whose memory went
to other models sees it: the model file (and, on return, the slot file) come from disk.
It needs root, and it briefly slows everything else on the machine.

Run: ``python bench/slotcache.py [--cold]`` (``--layers`` and ``--embd`` change the model's
size). Results: Markdown on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO))

from e2e_support import http_get  # noqa: E402
from llama_server import llama_server_binary, llama_server_cmd  # noqa: E402
from openai import OpenAI  # noqa: E402
from test_llama_server import running_llamaswap  # noqa: E402
from tiny_gguf import write_tiny_llama  # noqa: E402

N_CTX = 4096
IDLE_SAVE = 1.0
"""``slotCache.idleSave``: the default."""
PROMPT = "the tiny llama says hello world to the proxy and the model swap is ok " * 125


def metric(base_url: str, name: str, **labels: str) -> float:
    _, body = http_get(f"{base_url}/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def first_token(client: OpenAI, model: str, prompt: str) -> tuple[float, int, int]:
    """Seconds to the first content chunk of a streamed answer; prompt and cached tokens."""
    began = time.monotonic()
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=4,
        temperature=0, seed=1, stream=True, stream_options={"include_usage": True})
    ttft: float | None = None
    prompt_tokens = cached = 0
    for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.monotonic() - began
        if chunk.usage is not None:
            prompt_tokens = chunk.usage.prompt_tokens
            details = chunk.usage.prompt_tokens_details
            cached = (details.cached_tokens or 0) if details else 0
    return (ttft if ttft is not None else time.monotonic() - began), prompt_tokens, cached


DROP_CACHES = Path("/proc/sys/vm/drop_caches")
SAVE_LINE = re.compile(r"A: slot cache saved: .* in (\d+) ms \(GET /slots (\d+) ms, "
                       r"llama-server writing (\d+) ms\)")
IDLE_SAVE_LINE = re.compile(r"A: slot cache saved while idle: .* in (\d+) ms \(GET /slots "
                            r"(\d+) ms, llama-server writing (\d+) ms\)")
READ_AHEAD_LINE = re.compile(r"A: slot cache: (\d+) bytes of slot files read ahead in (\d+) ms")


def drop_page_cache() -> None:
    """Empty the kernel's page cache (root only), so the next load reads the model from
    disk as the first load after a swap on a busy machine does."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def can_drop_page_cache() -> str | None:
    """Why ``--cold`` cannot run here, or None."""
    if os.geteuid() != 0:
        return "--cold needs root (it writes 3 to /proc/sys/vm/drop_caches)"
    if not os.access(DROP_CACHES, os.W_OK):
        return f"--cold: {DROP_CACHES} is not writable here (a container without it?)"
    return None


def load_seconds(base_url: str) -> float:
    """The sum of A's load times so far (spawn to ready, a restore included)."""
    return metric(base_url, "llamaswap_model_load_seconds_sum", model="A")


def seconds_sum(base_url: str, operation: str) -> float:
    return metric(base_url, "llamaswap_slot_cache_seconds_sum", model="A", operation=operation)


def away_and_back(client: OpenAI, cold: bool) -> tuple[float, float, int]:
    """Swap to B, then back to A (the page cache dropped between, if ``cold``): the swap's
    seconds, A's time to first token on return, and the tokens it found cached."""
    began = time.monotonic()
    first_token(client, "B", "hello world")
    swap_seconds = time.monotonic() - began
    if cold:
        drop_page_cache()
    back, _, cached_tokens = first_token(client, "A", PROMPT)
    return swap_seconds, back, cached_tokens


def idle_gap(client: OpenAI, base: str, swap: Any, cold: bool) -> dict[str, Any]:
    """After a return to A: wait for A's save while idle, swap to B, come back to A."""
    began = time.monotonic()
    deadline = began + 600
    while metric(base, "llamaswap_slot_cache_operations_total", model="A",
                 operation="idle_save") < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("A's save while idle did not happen within 600 s")
        time.sleep(0.05)
    waited = time.monotonic() - began
    loads_before = load_seconds(base)
    restores_before = seconds_sum(base, "restore")
    swap_seconds, back, cached_tokens = away_and_back(client, cold)
    idle_saves = IDLE_SAVE_LINE.findall(swap.log.read_text())
    return {
        "idle_wait_s": waited, "swap_to_b_s": swap_seconds, "ttft_return_s": back,
        "cached_tokens_on_return": cached_tokens,
        "load_a_return_s": load_seconds(base) - loads_before,
        "idle_save_s": seconds_sum(base, "idle_save"),
        "idle_save_llama_server_ms": float(idle_saves[0][2]) if idle_saves else 0.0,
        "save_skipped_s": seconds_sum(base, "save_skipped"),
        "stop_time_saves": metric(base, "llamaswap_slot_cache_operations_total", model="A",
                                  operation="save"),
        "restore_s": seconds_sum(base, "restore") - restores_before,
    }


def run_mode(work: Path, big: Path, small: Path, cached: bool, cold: bool) -> dict[str, Any]:
    binary = llama_server_binary()
    cache = " --slot-save-path ${SLOT_CACHE_DIR}" if cached else ""
    models: dict[str, Any] = {
        "A": {"cmd": llama_server_cmd(binary, big, "A", "${PORT}", ctx=N_CTX, warmup=True,
                                      extra="-t 2 -b 2048 -ub 512" + cache)},
        "B": {"cmd": llama_server_cmd(binary, small, "B", "${PORT}", ctx=256)},
    }
    if cached:
        models["A"]["slotCache"] = True
    name = ("with" if cached else "without") + ("-cold" if cold else "-warm")
    with running_llamaswap(work, models, slot_cache={"idleSave": IDLE_SAVE},
                           name=name) as swap:
        client = swap.client()
        base = swap.base_url
        if cold:
            drop_page_cache()
        first, prompt_tokens, _ = first_token(client, "A", PROMPT)
        first_load = load_seconds(base)
        swap_seconds, back, cached_tokens = away_and_back(client, cold)
        saves = SAVE_LINE.findall(swap.log.read_text())
        restore = seconds_sum(base, "restore")
        load_return = load_seconds(base) - first_load
        read_ahead = READ_AHEAD_LINE.findall(swap.log.read_text())
        gap = idle_gap(client, base, swap, cold) if cached else None
        return {
            "mode": f"{'with' if cached else 'without'} slotCache",
            "page_cache": "cold" if cold else "warm", "prompt_tokens": prompt_tokens,
            "ttft_first_s": first, "swap_to_b_s": swap_seconds, "ttft_return_s": back,
            "cached_tokens_on_return": cached_tokens,
            "load_a_s": first_load, "load_a_return_s": load_return,
            "save_s": metric(base, "llamaswap_slot_cache_seconds_sum", model="A",
                             operation="save"),
            "save_get_slots_ms": float(saves[0][1]) if saves else 0.0,
            "save_llama_server_ms": float(saves[0][2]) if saves else 0.0,
            "restore_s": restore,
            "read_ahead": [{"bytes": int(b), "ms": int(ms)} for b, ms in read_ahead],
            "idle_gap": gap,
            "saved_bytes": metric(base, "llamaswap_slot_cache_bytes_total", model="A",
                                  operation="save"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--embd", type=int, default=1024)
    parser.add_argument("--cold", action="store_true",
                        help="also run both modes with the page cache emptied before each load "
                             "of A (needs root: writes /proc/sys/vm/drop_caches; it slows "
                             "everything else on the machine for a moment)")
    args = parser.parse_args()
    if args.cold and (why := can_drop_page_cache()):
        parser.error(why)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="slotcache-bench-") as tmp:
        work = Path(tmp)
        big, small = work / "big.gguf", work / "small.gguf"
        write_tiny_llama(big, seed=7, n_ctx_train=N_CTX, n_layers=args.layers,
                         n_embd=args.embd, n_ff=args.embd * 11 // 4)
        write_tiny_llama(small, seed=8)
        os.sync()  # no writeback of the fresh model file may overlap a measured load
        size_mb = big.stat().st_size / 1e6
        results = []
        for cold in (False, True) if args.cold else (False,):
            for cached in (False, True):
                directory = work / f"{'with' if cached else 'without'}-{cold}"
                directory.mkdir()
                results.append(run_mode(directory, big, small, cached, cold))
    print(f"## Slot cache: model A {size_mb:.0f} MB, {results[0]['prompt_tokens']}-token "
          f"prompt (load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n")
    print("| | page cache | first TTFT | swap to B | TTFT back on A | cached on return "
          "| A's load | A's load on return | save (llama-server's write) | save / load "
          "| restore |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = []
    for r in results:
        share = r["save_s"] / r["load_a_s"] if r["load_a_s"] else 0.0
        r["save_share_of_load"] = share
        save = (f"{r['save_s'] * 1000:.0f} ms ({r['save_llama_server_ms']:.0f} ms)"
                if r["save_s"] else "-")
        restore = f"{r['restore_s'] * 1000:.0f} ms" if r["restore_s"] else "-"
        print(f"| {r['mode']} | {r['page_cache']} | {r['ttft_first_s']:.2f} s "
              f"| {r['swap_to_b_s']:.2f} s | {r['ttft_return_s']:.2f} s "
              f"| {r['cached_tokens_on_return']} | {r['load_a_s']:.2f} s "
              f"| {r['load_a_return_s']:.2f} s | {save} "
              f"| {f'{share:.0%}' if r['save_s'] else '-'} | {restore} |")
        gap = r.get("idle_gap")
        if gap:
            gap_share = gap["save_skipped_s"] / r["load_a_s"] if r["load_a_s"] else 0.0
            gap["save_share_of_load"] = gap_share
            print(f"| {r['mode']}, idle gap | {r['page_cache']} | - | {gap['swap_to_b_s']:.2f} s "
                  f"| {gap['ttft_return_s']:.2f} s | {gap['cached_tokens_on_return']} "
                  f"| {r['load_a_s']:.2f} s | {gap['load_a_return_s']:.2f} s "
                  f"| current: {gap['save_skipped_s'] * 1000:.0f} ms "
                  f"(idle save {gap['idle_save_s'] * 1000:.0f} ms, "
                  f"{gap['idle_save_llama_server_ms']:.0f} ms writing) "
                  f"| {gap_share:.1%} | {gap['restore_s'] * 1000:.0f} ms |")
    for without, with_cache in zip(results[::2], results[1::2], strict=True):
        ratio = with_cache["ttft_return_s"] / without["ttft_return_s"]
        gap = with_cache["idle_gap"]
        gap_ratio = gap["ttft_return_s"] / without["ttft_return_s"]
        summary.append({"page_cache": without["page_cache"], "return_ratio": ratio,
                        "return_ratio_after_idle_gap": gap_ratio,
                        "save_share_of_load": with_cache["save_share_of_load"],
                        "save_share_of_load_after_idle_gap": gap["save_share_of_load"]})
        print(f"\n{without['page_cache']}: TTFT on return with/without: {ratio:.3f}x, after an "
              f"idle gap {gap_ratio:.3f}x (goal <= 0.1x); save / A's load: immediate swap "
              f"{with_cache['save_share_of_load']:.1%}, after an idle gap "
              f"{gap['save_share_of_load']:.1%} (goal <= 10%); saved "
              f"{with_cache['saved_bytes'] / 1e6:.1f} MB; read ahead: "
              f"{with_cache['read_ahead']}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"slotcache-{stamp}.json").write_text(json.dumps(
        {"model_mb": size_mb, "load_average": load, "results": results, "summary": summary},
        indent=2))


if __name__ == "__main__":
    main()
