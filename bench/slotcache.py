"""Slot cache benchmark: time to first token on returning to a model after a swap.

Real llamaswap (``twistd``), real llama.cpp ``llama-server`` (built by
``tests/e2e/build_llama_server.sh``), a random-weight llama model of a few hundred MB that
this script writes, and a 2,000-token prompt. Model A (the big one) and B (a tiny one) share
a swap group. One run measures both modes side by side:

- without ``slotCache``: A answers the prompt, B replaces A, A comes back and pays the whole
  prefill again;
- with ``slotCache``: the same, but A's slot is saved before it stops and restored before it
  is ready again.

Per mode it prints the first answer's time to first token (cold), the time to first token on
returning to A, what A's load took and, with the cache, what the save added to the swap and
the restore to the start. Goals (issue 16): the return at most 0.1x the uncached one, the
save at most 10% of the load. Run: ``python bench/slotcache.py`` (``--layers`` and
``--embd`` change the model's size). Results: Markdown on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
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


def run_mode(work: Path, big: Path, small: Path, cached: bool) -> dict[str, Any]:
    binary = llama_server_binary()
    cache = " --slot-save-path ${SLOT_CACHE_DIR}" if cached else ""
    models: dict[str, Any] = {
        "A": {"cmd": llama_server_cmd(binary, big, "A", "${PORT}", ctx=N_CTX,
                                      extra="-t 2 -b 2048 -ub 512" + cache)},
        "B": {"cmd": llama_server_cmd(binary, small, "B", "${PORT}", ctx=256)},
    }
    if cached:
        models["A"]["slotCache"] = True
    name = "with" if cached else "without"
    with running_llamaswap(work, models, name=name) as swap:
        client = swap.client()
        cold, prompt_tokens, _ = first_token(client, "A", PROMPT)
        began = time.monotonic()
        first_token(client, "B", "hello world")
        swap_seconds = time.monotonic() - began
        back, _, cached_tokens = first_token(client, "A", PROMPT)
        base = swap.base_url
        loads = metric(base, "llamaswap_model_load_seconds_count", model="A")
        return {
            "mode": f"{name} slotCache", "prompt_tokens": prompt_tokens,
            "ttft_cold_s": cold, "swap_to_b_s": swap_seconds, "ttft_return_s": back,
            "cached_tokens_on_return": cached_tokens,
            "load_a_s": metric(base, "llamaswap_model_load_seconds_sum", model="A") / loads,
            "save_s": metric(base, "llamaswap_slot_cache_seconds_sum", model="A",
                             operation="save"),
            "restore_s": metric(base, "llamaswap_slot_cache_seconds_sum", model="A",
                                operation="restore"),
            "saved_bytes": metric(base, "llamaswap_slot_cache_bytes_total", model="A",
                                  operation="save"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--embd", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slotcache-bench-") as tmp:
        work = Path(tmp)
        big, small = work / "big.gguf", work / "small.gguf"
        write_tiny_llama(big, seed=7, n_ctx_train=N_CTX, n_layers=args.layers,
                         n_embd=args.embd, n_ff=args.embd * 11 // 4)
        write_tiny_llama(small, seed=8)
        size_mb = big.stat().st_size / 1e6
        results = []
        for cached in (False, True):
            directory = work / ("with" if cached else "without")
            directory.mkdir()
            results.append(run_mode(directory, big, small, cached))
    without, with_cache = results
    ratio = with_cache["ttft_return_s"] / without["ttft_return_s"]
    save_share = with_cache["save_s"] / with_cache["load_a_s"] if with_cache["load_a_s"] else 0
    print(f"## Slot cache: model A {size_mb:.0f} MB, {without['prompt_tokens']}-token prompt\n")
    print("| | cold TTFT | swap to B | TTFT back on A | cached on return | A load "
          "| save | restore |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['ttft_cold_s']:.2f} s | {r['swap_to_b_s']:.2f} s "
              f"| {r['ttft_return_s']:.2f} s | {r['cached_tokens_on_return']} "
              f"| {r['load_a_s']:.2f} s | {r['save_s'] * 1000:.0f} ms "
              f"| {r['restore_s'] * 1000:.0f} ms |")
    print(f"\nTTFT on return with/without: {ratio:.3f}x (goal <= 0.1x); save / load of A: "
          f"{save_share:.1%} (goal <= 10%); saved {with_cache['saved_bytes'] / 1e6:.1f} MB")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"slotcache-{stamp}.json").write_text(json.dumps(
        {"model_mb": size_mb, "results": results, "return_ratio": ratio,
         "save_share_of_load": save_share}, indent=2))


if __name__ == "__main__":
    main()
