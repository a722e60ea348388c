"""Registers ``twistd llamaswap``; the real work is imported lazily from ``llamaswap.tap``."""

from twisted.application.service import ServiceMaker

llamaswap = ServiceMaker(
    "llamaswap",
    "llamaswap.tap",
    "OpenAI-compatible model swapper for local LLM servers",
    "llamaswap",
)
