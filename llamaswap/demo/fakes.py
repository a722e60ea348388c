"""Deterministic stand-ins for a model: tokens, token counts, embeddings and relevance."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from typing import Any


def tokenize(text: str) -> list[str]:
    """Split text into word-ish tokens that concatenate back to the original text."""
    return re.findall(r"\s*\S+|\s+", text)


def count_tokens(text: str) -> int:
    """A cheap, deterministic stand-in for a tokenizer."""
    return len(text.split())


def content_text(content: Any) -> str:
    """Flatten OpenAI message content (string or list of parts) into plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return " ".join(texts)
    return ""


def hash_vector(text: str, dimensions: int, salt: str = "") -> list[float]:
    """A deterministic unit vector derived from ``text`` (same input, same embedding)."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{salt}\x00{counter}\x00{text}".encode()).digest()
        for i in range(0, len(digest), 4):
            (n,) = struct.unpack_from("<I", digest, i)
            values.append(n / 0xFFFFFFFF * 2.0 - 1.0)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def relevance(query: str, document: str) -> float:
    """Deterministic score in [0, 1]: word overlap plus a small hash-based tie-breaker."""
    qwords = set(re.findall(r"\w+", query.lower()))
    dwords = set(re.findall(r"\w+", document.lower()))
    overlap = len(qwords & dwords) / len(qwords | dwords) if qwords | dwords else 0.0
    digest = hashlib.sha256(f"{query}\x00{document}".encode()).digest()
    jitter = int.from_bytes(digest[:4], "little") / 0xFFFFFFFF
    return round(0.9 * overlap + 0.1 * jitter, 6)
