"""Write a tiny random-weight llama GGUF model that llama.cpp can load and run.

The model is meaningless (its weights are random, so it generates garbage) but structurally
complete: llama architecture, an SPM ("llama") tokenizer whose byte-fallback tokens make any
text tokenisable, and a ChatML-style chat template so ``/v1/chat/completions`` works. The file
is about half a megabyte and a token takes well under a millisecond on a CPU.

Run as a script to write one: ``python tests/e2e/tiny_gguf.py OUT.gguf [SEED]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np

N_LAYERS = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX_TRAIN = 256
HEAD_DIM = N_EMBD // N_HEAD

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPACE = "\u2581"  # SentencePiece's word-boundary marker "▁"

# A few common words; every prefix of "▁word" becomes a piece so SPM merges can reach it.
_WORDS = (
    "the a an and or of to in is it you I hello world say this that what how why yes no "
    "user assistant system model test token tiny llama swap proxy chat ok good"
).split()

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """Return ``(tokens, scores, token_types)`` for a small SPM vocabulary.

    Layout: ``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens ``<0x00>``..``<0xFF>``, the
    ChatML control tokens, then normal pieces (``▁``, printable ASCII characters, and every
    prefix of ``▁word`` for a handful of words). Longer pieces get higher scores so the SPM
    merge loop prefers them.
    """
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    scores: list[float] = [0.0, 0.0, 0.0]

    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(gguf.TokenType.BYTE)
        scores.append(0.0)

    for control in ("<|im_start|>", "<|im_end|>"):
        tokens.append(control)
        types.append(gguf.TokenType.CONTROL)
        scores.append(0.0)

    pieces: list[str] = [SPACE]
    pieces += [chr(c) for c in range(33, 127)]  # printable ASCII except the space
    for word in _WORDS:
        full = SPACE + word
        pieces += [full[:end] for end in range(2, len(full) + 1)]
    seen: set[str] = set(tokens)
    for piece in pieces:
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
        scores.append(-1000.0 + 10.0 * len(piece) - 0.001 * len(tokens))
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(path: Path, seed: int = 0, *, n_ctx_train: int = N_CTX_TRAIN,
                     n_layers: int = N_LAYERS, n_embd: int = N_EMBD, n_ff: int = N_FF,
                     sliding_window: int = 0) -> None:
    """Write a 2-layer, 64-wide llama model with random f32 weights to ``path``.

    Different seeds give different weights (and so different files) with identical
    architecture and vocabulary. llama.cpp caps a context at the trained one, so a test
    with long prompts asks for a larger ``n_ctx_train``; the size arguments make bigger
    (slower) models for benchmarks.

    With ``sliding_window`` (in tokens) the model is a Gemma 2 instead: the same shapes
    plus Gemma's extra norms, its output tied to the embedding, and every other layer
    (0, 2, ...) attending only to the last ``sliding_window`` tokens: the kind of model
    whose KV cache llama.cpp keeps in two parts (a sliding-window one and a full one).
    """
    gemma = sliding_window > 0
    rng = np.random.default_rng(seed)
    N_LAYERS, N_EMBD, N_FF = n_layers, n_embd, n_ff  # noqa: N806 (the shapes below use them)
    HEAD_DIM = N_EMBD // N_HEAD  # noqa: N806
    tokens, scores, types = build_vocab()
    n_vocab = len(tokens)

    def weight(*shape: int) -> np.ndarray:
        # numpy shape is the reverse of GGUF's ne: (rows=out_features, cols=in_features).
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(N_EMBD, dtype=np.float32)

    writer = gguf.GGUFWriter(str(path), "gemma2" if gemma else "llama")
    writer.add_name(f"tiny-{'gemma2' if gemma else 'llama'}-random-{seed}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    if gemma:
        writer.add_sliding_window(sliding_window)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    for layer in range(N_LAYERS):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", norm())
        writer.add_tensor(f"{prefix}.attn_q.weight", weight(N_HEAD * HEAD_DIM, N_EMBD))
        writer.add_tensor(f"{prefix}.attn_k.weight", weight(N_HEAD_KV * HEAD_DIM, N_EMBD))
        writer.add_tensor(f"{prefix}.attn_v.weight", weight(N_HEAD_KV * HEAD_DIM, N_EMBD))
        writer.add_tensor(f"{prefix}.attn_output.weight", weight(N_EMBD, N_HEAD * HEAD_DIM))
        if gemma:
            writer.add_tensor(f"{prefix}.post_attention_norm.weight", norm())
            writer.add_tensor(f"{prefix}.post_ffw_norm.weight", norm())
        writer.add_tensor(f"{prefix}.ffn_norm.weight", norm())
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", norm())
    if not gemma:  # Gemma's output is its token embedding
        writer.add_tensor("output.weight", weight(n_vocab, N_EMBD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} OUT.gguf [SEED]")
    write_tiny_llama(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else 0)
