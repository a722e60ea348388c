# -*- test-case-name: tests.test_config -*-
"""The configuration as immutable values: what the rest of llamaswap reads.

Pure data, no parsing: ``llamaswap.config.loader`` builds these from a YAML file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamaswap.filters import Filters
from llamaswap.matrix import Matrix
from llamaswap.routing import SchedulerConfig
from llamaswap.selectors import ProfileConfig, SelectorConfig
from llamaswap.slotcache.config import ModelSlotCache, SlotCacheRoot, default_root
from llamaswap.supervision import SupervisionConfig

__all__ = [
    "API_KEY_SCOPES",
    "DEFAULT_GROUP",
    "DEFAULT_IGNORE_PATHS",
    "ApiKeyScope",
    "Capabilities",
    "Config",
    "ConfigError",
    "GroupConfig",
    "ModelConfig",
    "PeerConfig",
    "PerformanceConfig",
    "Timeouts",
    "UIConfig",
]


DEFAULT_GROUP = "(default)"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one line per problem.

    Each line names the file, the key path and what is wrong, e.g.
    ``config.yaml: models.llama.ttl: must be an integer >= 0, got 'x'``.
    """

    def __init__(self, problems: list[str], warnings: Sequence[str] = ()) -> None:
        super().__init__("\n".join([*problems, *(f"warning: {w}" for w in warnings)]))
        self.problems = problems
        self.warnings = tuple(warnings)
        """Non-fatal findings made on the way; a misspelt key often explains an error."""


@dataclass(frozen=True)
class Timeouts:
    """``timeouts:`` of a model or a peer, in seconds (0: no limit), llama-swap's defaults."""

    connect: float = 30.0
    keepalive: float = 30.0
    """Idle seconds before TCP keep-alive probes start on a connection (0: no probes)."""
    response_header: float = 0.0
    """From the request sent to the response head received; 0 waits as long as it takes."""
    tls_handshake: float = 10.0
    expect_continue: float = 1.0
    """Accepted for compatibility: llamaswap never sends ``Expect: 100-continue``."""
    idle_conn: float = 90.0
    """How long an idle pooled connection is kept open."""


PEER_TIMEOUTS = Timeouts(response_header=60.0)
"""A peer's defaults: a remote server must start answering within a minute."""


@dataclass(frozen=True)
class Capabilities:
    """``capabilities:`` of a model: what ``/v1/models`` tells clients it can do."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    tools: bool = False
    reranker: bool = False
    context: int = 0

    def empty(self) -> bool:
        return not (self.inputs or self.outputs or self.tools or self.reranker or self.context)


@dataclass(frozen=True)
class UIActivityConfig:
    session_id: tuple[str, ...] = ("X-Session-ID", "X-Litellm-Session-Id")
    """Request headers whose value groups activity rows into sessions (first present wins)."""


@dataclass(frozen=True)
class UIConfig:
    """``ui:``: settings the web UI reads (sent to it in the ``uiConfig`` event)."""

    activity: UIActivityConfig = field(default_factory=UIActivityConfig)


@dataclass(frozen=True)
class PerformanceConfig:
    """``performance:``: the sampler behind ``/api/performance``."""

    disabled: bool = False
    every: float = 5.0
    """Seconds between samples (at least 5)."""


DEFAULT_IGNORE_PATHS = (r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$",)
"""``upstream.ignorePaths`` when the config gives none: static files a browser fetches."""


@dataclass(frozen=True)
class ModelConfig:
    """One entry of ``models:``, after macro expansion and defaulting."""

    id: str
    cmd: tuple[str, ...]
    """argv after comment stripping, continuation joining and POSIX splitting (no shell)."""
    proxy: str
    """Base URL requests are forwarded to, e.g. ``http://127.0.0.1:5800``."""
    cmd_stop: str = ""
    """Raw stop command; ``${PID}`` is replaced, then it is split like ``cmd``."""
    check_endpoint: str | None = "/health"
    """Path polled until 200; ``None`` when the config says ``none``."""
    aliases: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    """Added to the inherited environment, in config order."""
    ttl: float = 0.0
    """Idle seconds before unloading; 0 means never (``globalTTL`` already applied)."""
    unload_timeout: float = 10.0
    """Seconds between SIGTERM (or ``cmdStop``) and SIGKILL."""
    unlisted: bool = False
    use_model_name: str = ""
    concurrency_limit: int = 10
    name: str = ""
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    port: int | None = None
    """The ``${PORT}`` allocated to this model, if its ``cmd`` uses it."""
    max_queue: int = 0
    """Requests that may wait for this model at once (429 beyond); 0 = unbounded."""
    send_loading_state: bool | None = None
    """Stream llama-swap style loading progress to chat clients; ``None``: the global value."""
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    resources: Mapping[str, float] = field(default_factory=dict)
    """What this model needs of the ``resources`` capacities while it runs."""
    filters: Filters = field(default_factory=Filters)
    upstream_headers: tuple[tuple[str, str], ...] = ()
    """Headers set on every request sent to this model's server (e.g. its own API key)."""
    slot_cache: ModelSlotCache = field(default_factory=ModelSlotCache)
    """Save and restore llama-server's slots across stops (``llamaswap.slotcache``)."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    capabilities: Capabilities = field(default_factory=Capabilities)
    ignore_websockets: bool = False
    """``compat.ignoreWebsockets``: a websocket upgrade for this model is refused (409)
    instead of starting it (always on for ``comfyui_auto``)."""


@dataclass(frozen=True)
class PeerConfig:
    """One entry of ``peers:``: a remote OpenAI-compatible server."""

    id: str
    proxy: str
    models: tuple[str, ...]
    api_key: str = ""
    filters: Filters = field(default_factory=Filters)
    ca_cert: str = ""
    """PEM file of the CA to trust for an https proxy instead of the system's roots."""
    timeouts: Timeouts = PEER_TIMEOUTS

    @property
    def connect_timeout(self) -> float:
        return self.timeouts.connect

    @property
    def response_header_timeout(self) -> float:
        return self.timeouts.response_header


@dataclass(frozen=True)
class GroupConfig:
    """A swap group (llama-swap ``groups:``); the implicit ``(default)`` group included."""

    id: str
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


API_KEY_SCOPES = ("all", "inference", "management")


@dataclass(frozen=True)
class ApiKeyScope:
    """What a scoped API key may do: ``inference`` (model endpoints, model lists),
    ``management`` (unload, reload, logs, metrics, UI...) or ``all``; ``models`` limits the
    models it may use (``None``: all)."""

    scope: str = "all"
    models: frozenset[str] | None = None


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``groups`` always covers every model exactly once."""

    models: Mapping[str, ModelConfig]
    groups: Mapping[str, GroupConfig]
    path: str = "<memory>"
    health_check_timeout: float = 120.0
    log_level: str = "info"
    start_port: int = 5800
    preload: tuple[str, ...] = ()
    global_ttl: float = 0.0
    unload_timeout: float = 10.0
    include_aliases_in_list: bool = False
    fast_path: bool = True
    """``fastPath``: use the fenced fast path (``llamaswap.web.fast``); the
    ``LLAMASWAP_FAST_PATH`` environment variable wins over it."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    matrix: Matrix | None = None
    """The matrix router's compiled sets; ``None`` when groups decide what coexists."""
    capacities: Mapping[str, float] = field(default_factory=dict)
    """Declared resource capacities (``resources:``); empty means no budget applies."""
    send_loading_state: bool = False
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    """The global ``supervision`` block (each model's own, merged, is on ``ModelConfig``)."""
    api_keys: tuple[str, ...] = ()
    api_key_scopes: Mapping[str, ApiKeyScope] = field(default_factory=dict)
    """Keys given as mappings: what each may do (plain string keys may do everything)."""
    peers: Mapping[str, PeerConfig] = field(default_factory=dict)
    max_request_size: int = 100 * 1024 * 1024
    """Largest request body accepted, in bytes; larger ones get 413."""
    selectors: Mapping[str, SelectorConfig] = field(default_factory=dict)
    profiles: Mapping[str, ProfileConfig] = field(default_factory=dict)
    log_to_stdout: str = "both"
    """``proxy``, ``upstream``, ``both`` or ``none``: what reaches the process log and /logs."""
    log_time_format: str = ""
    """A llama-swap (Go) time layout name for the lines of /logs; ``""`` means no time."""
    metrics_max_in_memory: int = 1000
    """Row cap of the activity store when it is in memory."""
    capture_buffer_bytes: int = 5 * 1024 * 1024
    """Byte budget for captured request/response bodies (``captureBuffer`` MiB); 0 is off."""
    store_path: str | None = None
    """SQLite file for the activity history (``store.path``); ``None`` keeps it in memory."""
    store_max_rows: int = 100_000
    """Row cap of the activity store when it is a file (``store.maxRows``)."""
    warnings: tuple[str, ...] = ()
    """Non-fatal findings (unknown keys, unsupported features), one line each."""
    slot_cache: SlotCacheRoot = field(default_factory=lambda: SlotCacheRoot(default_root()))
    """Where slot caches live and their total budget (top-level ``slotCache``)."""
    ui: UIConfig = field(default_factory=UIConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    ignore_paths: tuple[str, ...] = DEFAULT_IGNORE_PATHS
    """``upstream.ignorePaths``: regular expressions (searched in the path below
    ``/upstream/<model>``) for which a request never starts its model (409 if not running)."""
    config_dir: str | None = None
    """The configuration directory merged after ``path`` (``--config-dir``), if any."""
    sources: tuple[str, ...] = ()
    """Every file this config was merged from (a directory's files too); empty: ``path``."""

    def resolve(self, name: str) -> str | None:
        """The model ID a request name means: an ID wins over an alias; ``None`` if unknown."""
        if name in self.models:
            return name
        for model in self.models.values():
            if name in model.aliases:
                return model.id
        return None

    def resolve_peer(self, name: str) -> tuple[str, str] | None:
        """``(peer id, model)`` for ``<peer>/<model>`` or a bare name exactly one peer lists.

        Call it only after ``resolve``: local models and aliases win over peer models.
        """
        peer_id, slash, model = name.partition("/")
        if slash and peer_id in self.peers and model in self.peers[peer_id].models:
            return peer_id, model
        owners = [peer.id for peer in self.peers.values() if name in peer.models]
        return (owners[0], name) if len(owners) == 1 else None

    def group_of(self, model_id: str) -> GroupConfig:
        for group in self.groups.values():
            if model_id in group.members:
                return group
        raise KeyError(model_id)
