"""``capabilities`` rendered as llama-swap renders them in ``/v1/models``."""

from __future__ import annotations

from llamaswap.capabilities import listing_fields, metadata_without_rendered
from llamaswap.config.model import Capabilities


def test_nothing_configured_adds_nothing() -> None:
    assert listing_fields(Capabilities()) == {}
    assert metadata_without_rendered({"capabilities": 1}, Capabilities()) == {"capabilities": 1}


def test_a_vision_model_with_tools_and_a_context() -> None:
    caps = Capabilities(inputs=("text", "image"), outputs=("text",), tools=True, context=8192)
    assert listing_fields(caps) == {
        "architecture": {"input_modalities": ["text", "image"], "output_modalities": ["text"],
                         "modality": "text+image->text"},
        "capabilities": {"vision": True, "function_calling": True},
        "supported_parameters": ["tools", "tool_choice"],
        "context_length": 8192,
    }


def test_speech_image_and_reranker_capabilities() -> None:
    fields = listing_fields(Capabilities(inputs=("text", "audio", "image"),
                                         outputs=("text", "audio", "image"), reranker=True))
    assert fields["capabilities"] == {
        "vision": True, "audio_transcriptions": True, "audio_speech": True,
        "image_generation": True, "image_to_image": True, "reranker": True}


def test_only_a_context_size_gives_no_capability_map() -> None:
    assert listing_fields(Capabilities(context=4096)) == {"context_length": 4096}
    assert listing_fields(Capabilities(inputs=("text",))) == {  # an empty map is left out
        "architecture": {"input_modalities": ["text"]}}


def test_capabilities_win_over_metadata_keys_of_the_same_name() -> None:
    caps = Capabilities(tools=True)
    assert metadata_without_rendered({"capabilities": "x", "context_length": 3, "k": 1},
                                     caps) == {"k": 1}
