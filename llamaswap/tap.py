"""twistd integration: ``twistd -n llamaswap -c config.yaml [-l ENDPOINT]...``."""

from __future__ import annotations

import re
import sys
from typing import Any

from twisted.python import usage

from llamaswap.config import Config, ConfigError, load_config
from llamaswap.service import DEFAULT_DRAIN_TIMEOUT, LlamaSwapService

DEFAULT_LISTEN = "tcp:8080"
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(?P<port>\d+)$")


def endpoint_from_listen(value: str) -> str:
    """Accept llama-swap's ``:8080`` and ``host:port`` forms besides Twisted endpoint strings."""
    match = _HOST_PORT.match(value)
    if not match:
        return value
    host, port = match.group("host"), match.group("port")
    if not host:
        return f"tcp:{port}"
    if host.startswith("["):
        return f"tcp6:{port}:interface={host[1:-1].replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={host}"


class Options(usage.Options):
    synopsis = "-c CONFIG [-l ENDPOINT]..."
    longdesc = ("Serve many local model servers behind one OpenAI-compatible endpoint, "
                "starting and swapping them on demand.")
    optParameters = [
        ["config", "c", None, "The YAML configuration file (llama-swap compatible)."],
        ["drain-timeout", None, DEFAULT_DRAIN_TIMEOUT,
         "Seconds to let in-flight requests finish on shutdown.", float],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, value: str) -> None:
        """Listen on a Twisted endpoint (tcp:8080:interface=127.0.0.1, unix:/run/x.sock,
        ssl:8443:privateKey=k.pem:certKey=c.pem) or host:port. Repeatable. Default tcp:8080."""
        self["listen"].append(endpoint_from_listen(value))

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config is required")
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as e:
            print(str(e), file=sys.stderr)  # one line per problem, then any warnings
            raise SystemExit(1) from None


def makeService(options: Any) -> LlamaSwapService:
    config: Config = options["loaded"]
    service = LlamaSwapService(config, drain_timeout=options["drain-timeout"])
    for endpoint in options["listen"]:
        service.listen(endpoint)
    return service
