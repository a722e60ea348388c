"""llamaswap: many local model servers behind one OpenAI-compatible endpoint, swapped on demand.

Embedding in a Twisted application::

    from llamaswap import LlamaSwapService, load_config

    swapper = LlamaSwapService(load_config("config.yaml"))
    swapper.setServiceParent(my_multiservice)        # starts/stops models with your app
    my_root.putChild(b"llm", swapper.resource)       # or serve swapper.site() on its own port

Names are imported lazily so that ``python -m llamaswap.demo`` starts without Twisted.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llamaswap._version import __version__

if TYPE_CHECKING:
    from llamaswap.config import Config, ConfigError, load_config
    from llamaswap.service import LlamaSwapService

_LAZY = {
    "Config": "llamaswap.config",
    "ConfigError": "llamaswap.config",
    "load_config": "llamaswap.config",
    "LlamaSwapService": "llamaswap.service",
}

__all__ = ["Config", "ConfigError", "LlamaSwapService", "load_config", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llamaswap' has no attribute {name!r}")
