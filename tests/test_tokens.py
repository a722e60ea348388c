"""Token figures read incrementally from response bytes (llamaswap.tokens)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from llamaswap.tokens import JSON_TAIL_BYTES, TokenMeter


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + \
        b"data: [DONE]\n\n"


STREAM = sse(
    {"choices": [{"delta": {"content": "Hel"}}]},
    {"choices": [{"delta": {"content": "lo"}}]},
    {"choices": [{"delta": {}, "finish_reason": "stop"}],
     "timings": {"prompt_n": 12, "prompt_ms": 30.0, "prompt_per_second": 400.0,
                 "predicted_n": 2, "predicted_ms": 40.0, "predicted_per_second": 50.0,
                 "cache_n": 4}},
    {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}},
)


def feed_in_pieces(meter: TokenMeter, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in sorted(set(cuts)):
        meter.feed(data[start:cut])
        start = cut
    meter.feed(data[start:])


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_sse_figures_do_not_depend_on_how_the_stream_is_cut(cuts: list[int]) -> None:
    meter = TokenMeter("text/event-stream; charset=utf-8")
    feed_in_pieces(meter, STREAM, cuts)
    figures = meter.finish()
    assert (figures.input_tokens, figures.output_tokens, figures.cached_tokens) == (12, 2, 4)
    assert figures.tokens_per_second == 50.0
    assert figures.prompt_per_second == 400.0
    assert figures.upstream_ms == 70.0


def test_figures_are_known_as_soon_as_their_event_passed() -> None:
    meter = TokenMeter("text/event-stream")
    usage_at = STREAM.index(b'"usage"')
    meter.feed(STREAM[: STREAM.index(b"\n", usage_at) + 1])
    assert meter.figures.output_tokens == 2


def test_anthropic_and_responses_usage_in_streams() -> None:
    meter = TokenMeter("text/event-stream")
    meter.feed(b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
               b'{"input_tokens":7,"output_tokens":1,"cache_read_input_tokens":3}}}\n\n')
    meter.feed(b'event: message_delta\ndata: {"type":"message_delta","usage":'
               b'{"output_tokens":9}}\n\n')
    figures = meter.finish()
    assert (figures.input_tokens, figures.output_tokens, figures.cached_tokens) == (7, 9, 3)
    meter = TokenMeter("text/event-stream")
    meter.feed(b'data: {"type":"response.completed","response":{"usage":{"input_tokens":5,'
               b'"output_tokens":6,"input_tokens_details":{"cached_tokens":2}}}}\n\n')
    figures = meter.finish()
    assert (figures.input_tokens, figures.output_tokens, figures.cached_tokens) == (5, 6, 2)


def test_json_body_usage_and_timings_llama_cpp_timings_win() -> None:
    body = json.dumps({"choices": [{"message": {"content": "x"}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 20},
                       "timings": {"prompt_n": 11, "predicted_n": 21,
                                   "predicted_per_second": 33.5}}, indent=2).encode()
    meter = TokenMeter("application/json")
    feed_in_pieces(meter, body, [1, 17, 100])
    figures = meter.finish()
    assert (figures.input_tokens, figures.output_tokens) == (11, 21)
    assert figures.tokens_per_second == 33.5


def test_a_huge_json_body_is_not_kept_whole_but_its_usage_is_read() -> None:
    embedding = [0.123456789] * 200_000  # a few MiB
    body = json.dumps({"data": [{"embedding": embedding}],
                       "usage": {"prompt_tokens": 8, "total_tokens": 8}}).encode()
    assert len(body) > 20 * JSON_TAIL_BYTES
    meter = TokenMeter("application/json")
    for i in range(0, len(body), 65536):
        meter.feed(body[i:i + 65536])
        assert len(meter._buffer) <= JSON_TAIL_BYTES
    assert meter.finish().input_tokens == 8


def test_usage_mentioned_inside_content_does_not_confuse_the_json_reader() -> None:
    body = json.dumps({"choices": [{"message": {"content": 'the "usage": {broken'}}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()
    meter = TokenMeter("application/json")
    meter.feed(body)
    assert meter.finish().output_tokens == 4


def test_compressed_and_unknown_bodies_are_left_alone() -> None:
    meter = TokenMeter("application/json", "gzip")
    meter.feed(b'{"usage": {"prompt_tokens": 3}}')
    assert meter.finish().input_tokens is None
    meter = TokenMeter("audio/mpeg")
    meter.feed(b'"usage": {"prompt_tokens": 3}')
    assert meter._buffer == b""
    assert meter.finish().input_tokens is None


def test_malformed_events_are_skipped() -> None:
    meter = TokenMeter("text/event-stream")
    meter.feed(b'data: {"usage": {"prompt_tokens": \n\ndata: {"usage": {"prompt_tokens": 4}}\n\n')
    assert meter.finish().input_tokens == 4


def test_an_absurdly_long_sse_line_is_dropped_not_held() -> None:
    meter = TokenMeter("text/event-stream")
    meter.feed(b"data: " + b"x" * (2 * 1024 * 1024))
    assert meter._buffer == b""
    meter.feed(b'"usage" still the same line\ndata: {"usage": {"completion_tokens": 5}}\n\n')
    assert meter.finish().output_tokens == 5


# Speculative decoding and vLLM's per-request metrics, read as llama-swap reads them (its
# TestServer_ParseMetrics_VLLMSpeculativeDecoding, ..._VLLMSpeculativeDecodingPartial,
# TestServer_ProcessStreamingResponse_VLLMSpeculativeDecoding and
# TestServer_ParseMetrics_TimingsDraftTokensNotOverwritten).

VLLM_METRICS = {"mean_itl_ms": 10.0, "time_to_first_token_ms": 100.0,
                "speculative_decoding": {"mean_acceptance_length": 1.7, "num_spec_steps": 20,
                                         "num_accepted_draft_tokens": 14,
                                         "num_draft_tokens": 20}}


def test_llama_server_draft_counts_come_from_its_timings() -> None:
    meter = TokenMeter("application/json")
    meter.feed(json.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 9},
                           "timings": {"prompt_n": 5, "predicted_n": 9, "draft_n": 12,
                                       "draft_n_accepted": 0}}).encode())
    meter.finish()
    assert (meter.figures.draft_tokens, meter.figures.draft_accepted_tokens) == (12, 0)


def test_vllm_metrics_give_draft_counts_and_rates_in_a_json_body() -> None:
    meter = TokenMeter("application/json")
    meter.feed(json.dumps({"id": "x", "object": "chat.completion",
                           "usage": {"prompt_tokens": 42, "completion_tokens": 128,
                                     "prompt_tokens_details": {"cached_tokens": 2}},
                           "metrics": VLLM_METRICS}).encode())
    meter.finish()
    figures = meter.figures
    assert (figures.draft_tokens, figures.draft_accepted_tokens) == (20, 14)
    assert figures.tokens_per_second == 100.0  # 1000 / mean inter-token latency
    assert figures.prompt_per_second == 400.0  # (42 - 2 cached) / 0.1 s to the first token


def test_vllm_metrics_on_the_last_stream_event() -> None:
    meter = TokenMeter("text/event-stream")
    meter.feed(sse({"choices": [{"delta": {"content": "hi"}}]},
                   {"object": "chat.completion.chunk", "choices": [],
                    "usage": {"prompt_tokens": 11742, "completion_tokens": 35},
                    "metrics": VLLM_METRICS}))
    meter.finish()
    assert (meter.figures.draft_tokens, meter.figures.draft_accepted_tokens) == (20, 14)
    assert (meter.figures.input_tokens, meter.figures.output_tokens) == (11742, 35)


def test_half_a_speculative_decoding_object_gives_no_draft_counts() -> None:
    meter = TokenMeter("application/json")
    meter.feed(json.dumps({"usage": {"prompt_tokens": 42, "completion_tokens": 128},
                           "metrics": {"speculative_decoding": {"num_draft_tokens": 20}}})
               .encode())
    meter.finish()
    assert (meter.figures.draft_tokens, meter.figures.draft_accepted_tokens) == (None, None)


def test_timings_draft_counts_survive_metrics_without_them() -> None:
    meter = TokenMeter("application/json")
    meter.feed(json.dumps({"timings": {"prompt_n": 5, "predicted_n": 9, "draft_n": 8,
                                       "draft_n_accepted": 6},
                           "metrics": {"mean_itl_ms": 20.0}}).encode())
    meter.finish()
    assert (meter.figures.draft_tokens, meter.figures.draft_accepted_tokens) == (8, 6)
    assert meter.figures.tokens_per_second == 50.0
