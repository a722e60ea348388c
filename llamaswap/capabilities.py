"""A model's ``capabilities`` as ``/v1/models`` shows them (llama-swap's listing fields).

Pure. From the configured modalities and flags come OpenRouter-style ``architecture``
(input/output modalities), a ``capabilities`` map of what clients look for (vision, tool
calls, speech...), ``supported_parameters`` and ``context_length``; see
``docs/capabilities.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llamaswap.config.model import Capabilities

__all__ = ["RENDERED_KEYS", "listing_fields", "metadata_without_rendered"]

RENDERED_KEYS = frozenset({"architecture", "capabilities", "supported_parameters",
                           "context_length"})
"""Top-level listing fields the capabilities own: a model's metadata may not set them."""

_PAIRS = (("audio", "text", "audio_transcriptions"), ("text", "audio", "audio_speech"),
          ("text", "image", "image_generation"), ("image", "image", "image_to_image"))
"""(input, output, capability): what a model taking that in and giving that out can do."""


def listing_fields(caps: Capabilities) -> dict[str, Any]:
    """The fields ``caps`` adds to a ``/v1/models`` record (none when it is empty)."""
    fields: dict[str, Any] = {}
    if caps.empty():
        return fields
    ins, outs = list(caps.inputs), list(caps.outputs)
    architecture: dict[str, Any] = {}
    if ins:
        architecture["input_modalities"] = ins
    if outs:
        architecture["output_modalities"] = outs
    if ins and outs:
        architecture["modality"] = "+".join(ins) + "->" + "+".join(outs)
    if architecture:
        fields["architecture"] = architecture
    can: dict[str, bool] = {}
    if "image" in ins:
        can["vision"] = True
    if ins and outs:
        can.update({name: True for source, target, name in _PAIRS
                    if source in ins and target in outs})
    if caps.tools:
        can["function_calling"] = True
        fields["supported_parameters"] = ["tools", "tool_choice"]
    if caps.reranker:
        can["reranker"] = True
    if can:  # an empty map is left out, as Go's ``omitempty`` does
        fields["capabilities"] = can
    if caps.context > 0:
        fields["context_length"] = caps.context
    return fields


def metadata_without_rendered(metadata: Mapping[str, Any], caps: Capabilities) -> dict[str, Any]:
    """A model's metadata for its listing: with capabilities set, theirs win."""
    if caps.empty():
        return dict(metadata)
    return {k: v for k, v in metadata.items() if k not in RENDERED_KEYS}
