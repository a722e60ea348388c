"""``App``: the few things the resource tree needs from whoever serves it.

``LlamaSwapService`` is one; a test or an embedding application may pass any object with
these members. Resources never import the service, so the web layer stays below it and the
service can be rebuilt without touching a resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from llamaswap.config import Config
from llamaswap.observability import Observability
from llamaswap.peers import Peers
from llamaswap.process import ModelProcess
from llamaswap.router import Router
from llamaswap.selectors import Rewriter
from llamaswap.web.forward import Forwarder


class App(Protocol):
    """What the resources use; read-only here, each owned and kept current by the app."""

    @property
    def config(self) -> Config:
        """The configuration in effect (replaced, not changed, by a reload)."""

    @property
    def reactor(self) -> Any:
        """The ``IReactorTime`` for heartbeats and loading-state ticks while a request
        waits."""

    @property
    def processes(self) -> Mapping[str, ModelProcess]:
        """Every configured model's process, by model ID."""

    @property
    def router(self) -> Router:
        """Queues requests for models, swaps, unloads."""

    @property
    def forwarder(self) -> Forwarder:
        """Relays a request to a local model's server."""

    @property
    def peers(self) -> Peers:
        """Relays a request to a peer (no swap, no queue)."""

    @property
    def names(self) -> Rewriter:
        """The active profile's pins and the selectors: the model name a request gets."""

    @property
    def observability(self) -> Observability:
        """Log streams, events, metrics, activity and captures."""

    def reload(self) -> dict[str, list[str]]:
        """Re-read the config file and apply it; raises ``ConfigError`` if it is invalid."""
