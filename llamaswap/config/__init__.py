"""The configuration: a llama-swap compatible YAML file read into immutable values.

Pure code, no Twisted. ``load_config`` turns a file into a ``Config`` or raises
``ConfigError`` listing every problem with its file and key path. The modules, in pipeline
order: ``yamlv3`` (parsing), ``macros`` and ``cmdline`` (llama-swap's macro language and
command splitting), ``problems`` (collecting problems, typed reading), ``decode`` (typed
values with defaults), ``semantic`` (checks across entries), ``loader`` (the entry points);
``model`` holds the resulting dataclasses.
"""

from llamaswap.config.loader import load_config, parse_config
from llamaswap.config.model import (
    API_KEY_SCOPES,
    DEFAULT_GROUP,
    ApiKeyScope,
    Config,
    ConfigError,
    GroupConfig,
    ModelConfig,
    PeerConfig,
)

__all__ = [
    "API_KEY_SCOPES",
    "DEFAULT_GROUP",
    "ApiKeyScope",
    "Config",
    "ConfigError",
    "GroupConfig",
    "ModelConfig",
    "PeerConfig",
    "load_config",
    "parse_config",
]
