"""Token figures read from upstream responses as their bytes pass by.

``TokenMeter.feed`` sees every chunk the relay writes to the client, after it was written:
it never holds a chunk back. Server-sent events are split into lines and only ``data:``
lines that mention ``usage``, ``timings`` or ``metrics`` are decoded. A plain JSON body is
not kept whole: only its last ``JSON_TAIL_BYTES`` are, because ``usage`` and llama.cpp's
``timings`` sit at the end of a completion object.

Pure code: no Twisted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

JSON_TAIL_BYTES = 64 * 1024
MAX_SSE_LINE = 1024 * 1024
_KEYS = (b'"usage"', b'"timings"', b'"metrics"')
_DECODER = json.JSONDecoder()
_mentions_figures = re.compile(rb'"(?:usage|timings|metrics)"').search
"""Whether a chunk names one of ``_KEYS``: one scan, cheaper than three ``in`` (per chunk)."""


@dataclass
class TokenFigures:
    """What one response said about its tokens; ``None`` where it said nothing."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    prompt_per_second: float | None = None
    tokens_per_second: float | None = None
    upstream_ms: float | None = None
    """llama.cpp's ``prompt_ms + predicted_ms``."""
    draft_tokens: int | None = None
    """Tokens a speculative-decoding draft model proposed ..."""
    draft_accepted_tokens: int | None = None
    """... and how many of them the model accepted (both set, or neither)."""

    def merge(self, obj: Any) -> None:
        """Take the figures of one decoded JSON object (a stream event or a whole body)."""
        if not isinstance(obj, dict):
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage(usage)
        for outer in (obj.get("response"), obj.get("message")):
            usage = outer.get("usage") if isinstance(outer, dict) else None
            if isinstance(usage, dict):
                self._usage(usage)
        timings = obj.get("timings")
        if isinstance(timings, dict):
            self._timings(timings)
        metrics = obj.get("metrics")
        if isinstance(metrics, dict):
            self._vllm_metrics(metrics)

    def _usage(self, usage: dict[str, Any]) -> None:
        self.input_tokens = _positive(usage, "prompt_tokens", "input_tokens") or self.input_tokens
        self.output_tokens = (_positive(usage, "completion_tokens", "output_tokens")
                              or self.output_tokens)
        cached = (_positive(usage, "cache_read_input_tokens")
                  or _detail(usage, "input_tokens_details", "cached_tokens")
                  or _detail(usage, "prompt_tokens_details", "cached_tokens"))
        self.cached_tokens = cached or self.cached_tokens

    def _timings(self, t: dict[str, Any]) -> None:
        """llama.cpp's own measurements win over ``usage`` (they are what it did)."""
        self.input_tokens = _positive(t, "prompt_n") or self.input_tokens
        self.output_tokens = _positive(t, "predicted_n") or self.output_tokens
        self.cached_tokens = _positive(t, "cache_n") or self.cached_tokens
        self.prompt_per_second = _positive(t, "prompt_per_second") or self.prompt_per_second
        self.tokens_per_second = _positive(t, "predicted_per_second") or self.tokens_per_second
        total = (_number(t.get("prompt_ms")) or 0.0) + (_number(t.get("predicted_ms")) or 0.0)
        if total > 0:
            self.upstream_ms = total
        self._drafts(t, "draft_n", "draft_n_accepted")

    def _vllm_metrics(self, m: dict[str, Any]) -> None:
        """vLLM's per-request ``metrics``: rates from its latencies, and speculative decoding
        counts (``--per-request-spec-decode-metrics``), as llama-swap reads them."""
        spec = m.get("speculative_decoding")
        if isinstance(spec, dict):
            self._drafts(spec, "num_draft_tokens", "num_accepted_draft_tokens")
        first_token_ms = _positive(m, "time_to_first_token_ms")
        if first_token_ms and self.input_tokens:
            fresh = self.input_tokens - (self.cached_tokens or 0)
            self.prompt_per_second = fresh / (first_token_ms / 1000) if fresh > 0 else None
        inter_token_ms = _positive(m, "mean_itl_ms")
        if inter_token_ms:
            self.tokens_per_second = 1000 / inter_token_ms

    def _drafts(self, d: dict[str, Any], drafted: str, accepted: str) -> None:
        """Both counters or neither: a rate from half the data would be wrong."""
        proposed, taken = _count(d.get(drafted)), _count(d.get(accepted))
        if proposed is not None and taken is not None:
            self.draft_tokens, self.draft_accepted_tokens = proposed, taken


class TokenMeter:
    """Follows one response body; ``figures`` is up to date after every ``feed``."""

    def __init__(self, content_type: str, content_encoding: str = "") -> None:
        self.figures = TokenFigures()
        content_type = content_type.lower()
        sse = content_type.startswith("text/event-stream")
        # A compressed body cannot be read incrementally here; llama-server does not compress.
        off = bool(content_encoding and content_encoding.lower() != "identity")
        self._sse = sse and not off
        self._json = not sse and not off and "json" in content_type
        self._buffer = b""
        self._skip_line = False

    def feed(self, data: bytes) -> None:
        if self._sse:
            self._feed_sse(data)
        elif self._json:
            if len(data) >= JSON_TAIL_BYTES:  # the tail is all in this chunk: no concatenation
                self._buffer = data[-JSON_TAIL_BYTES:]
            else:
                self._buffer = (self._buffer + data)[-JSON_TAIL_BYTES:]

    def finish(self) -> TokenFigures:
        """The body is complete: read what is still pending and return the figures."""
        if self._sse and self._buffer:
            self._sse_line(self._buffer)
        elif self._json and self._buffer:
            self._read_json_tail(self._buffer)
        self._buffer = b""
        return self.figures

    def _feed_sse(self, data: bytes) -> None:
        data = self._buffer + data if self._buffer else data
        if not self._skip_line and not _mentions_figures(data):
            # The common chunk (a token) has no figures: one scan, no splitting into lines.
            self._buffer = data[data.rfind(b"\n") + 1:]
        else:
            *lines, self._buffer = data.split(b"\n")
            self._sse_lines(lines)
        if len(self._buffer) > MAX_SSE_LINE:  # an absurd line: skip it rather than hold it
            self._buffer = b""
            self._skip_line = True

    def _sse_lines(self, lines: list[bytes]) -> None:
        for line in lines:
            if self._skip_line:
                self._skip_line = False
                continue
            self._sse_line(line)

    def _sse_line(self, line: bytes) -> None:
        if not line.startswith(b"data:") or not _mentions_figures(line):
            return
        try:
            self.figures.merge(json.loads(line[5:]))
        except ValueError:
            pass

    def _read_json_tail(self, tail: bytes) -> None:
        """Decode the objects that follow the last ``"usage":``, ``"timings":`` and
        ``"metrics":`` keys."""
        text = tail.decode("utf-8", "replace")
        found: dict[str, Any] = {}
        for key in ("usage", "timings", "metrics"):
            at = len(text)
            while True:
                at = text.rfind(f'"{key}"', 0, at)
                if at < 0:
                    break
                brace = text.find("{", at)
                colon = text.find(":", at)
                if brace < 0 or colon < 0 or text[colon + 1:brace].strip():
                    continue
                try:
                    found[key], _ = _DECODER.raw_decode(text, brace)
                    break
                except ValueError:
                    continue
        if not found and tail.lstrip()[:1] == b"{":
            try:
                found = json.loads(tail)
            except ValueError:
                return
        self.figures.merge(found)


def _detail(usage: dict[str, Any], details: str, key: str) -> Any:
    """``_positive`` of ``usage[details][key]``; ``None`` when ``details`` is no object."""
    inner = usage.get(details)
    return _positive(inner, key) if isinstance(inner, dict) else None


def _count(value: Any) -> int | None:
    """A whole number of tokens (0 included); ``None`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _positive(d: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` whose value is a number above 0 (an ``int`` stays one)."""
    for key in keys:
        raw = d.get(key)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
            if value > 0:
                return int(value) if isinstance(raw, int) else value
    return None
