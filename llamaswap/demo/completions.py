"""The two OpenAI completion shapes the demo answers, side by side: chat
(``/v1/chat/completions``) and text (``/v1/completions``).

Both run the same way (``DemoServer._complete``): read the prompt, cut the reply into tokens,
answer whole or as server-sent events. A ``Kind`` holds only what differs: where the prompt
is, and how a choice (whole, or one streamed chunk) is shaped. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamaswap.demo.fakes import content_text


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def timings(prompt_tokens: int, completion_tokens: int, seconds: float) -> dict[str, float]:
    """llama.cpp-style ``timings`` object (llama-swap's metrics read these)."""
    predicted_ms = max(seconds * 1000.0, 0.001)
    return {
        "prompt_n": prompt_tokens,
        "prompt_ms": 1.0,
        "prompt_per_second": prompt_tokens * 1000.0,
        "predicted_n": completion_tokens,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_second": round(completion_tokens * 1000.0 / predicted_ms, 3),
    }


@dataclass(frozen=True)
class Kind:
    """What tells one completion shape from the other (module docstring)."""

    id_prefix: str
    object_name: str
    chunk_object: str
    prompt: Callable[[dict[str, Any]], tuple[str, str]]
    """The request's prompt text (counted as prompt tokens), and what the reply answers."""
    choice: Callable[[str, str], dict[str, Any]]
    """The one choice of a whole answer: its text and finish reason."""
    chunk_choice: Callable[[str | None, str | None], dict[str, Any]]
    """A streamed choice: a token (``None`` in the last chunk) and the finish reason."""
    opening: dict[str, Any] | None = None
    """A choice sent before the first token, if the shape has one."""


def _chat_prompt(body: dict[str, Any]) -> tuple[str, str]:
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    prompt_text = " ".join(
        content_text(m.get("content")) for m in messages if isinstance(m, dict)
    )
    last_user = ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            last_user = content_text(message.get("content"))
            break
    return prompt_text, last_user


def _text_prompt(body: dict[str, Any]) -> tuple[str, str]:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = " ".join(p for p in prompt if isinstance(p, str))
    prompt = prompt if isinstance(prompt, str) else ""
    return prompt, prompt


def _chat_delta(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _text_choice(text: str, finish: str | None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


CHAT = Kind(
    id_prefix="chatcmpl",
    object_name="chat.completion",
    chunk_object="chat.completion.chunk",
    prompt=_chat_prompt,
    choice=lambda text, finish: {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": finish,
    },
    chunk_choice=lambda token, finish: _chat_delta({} if token is None else {"content": token},
                                                   finish),
    opening=_chat_delta({"role": "assistant", "content": ""}, None),
)

TEXT = Kind(
    id_prefix="cmpl",
    object_name="text_completion",
    chunk_object="text_completion",
    prompt=_text_prompt,
    choice=_text_choice,
    chunk_choice=lambda token, finish: _text_choice(token or "", finish),
)
