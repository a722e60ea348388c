# -*- test-case-name: tests.test_exposure -*-
"""The startup warning for an API reachable beyond this machine without ``apiKeys``.

Anyone who can reach such an address can run, swap and unload every model, read the logs and
change the active profile, so llamaswap says so loudly, once per address, at startup.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from twisted.internet.endpoints import serverFromString

from llamaswap.config import Config
from llamaswap.logs import get_logger

log = get_logger("llamaswap.exposure")

_ALL_INTERFACES = {"", "0.0.0.0", "::", "0:0:0:0:0:0:0:0"}


def exposed_address(endpoint: str, reactor: Any = None) -> str | None:
    """``host:port`` when ``endpoint`` listens beyond loopback, else ``None``.

    TCP/SSL endpoints are judged by their interface (empty means all); systemd sockets by the
    address they are bound to; UNIX sockets never count. Host names other than ``localhost``
    count as exposed (they may resolve to anything).
    """
    if reactor is None:
        from twisted.internet import reactor
    try:
        parsed = serverFromString(reactor, endpoint)
    except Exception:  # tap.py reports bad endpoints itself
        return None
    host: str | None
    port: int | str | None
    kind, positional, named = _description(endpoint)
    if kind in _INTERFACE_DEFAULTS:  # tcp, tcp6, ssl: judged by their interface
        host = named.get("interface", _INTERFACE_DEFAULTS[kind])
        port = named.get("port", positional[0] if positional else None)
    elif hasattr(parsed, "fileno") and hasattr(parsed, "addressFamily"):  # systemd:
        host, port = _bound_address(parsed.fileno, parsed.addressFamily)
    else:
        return None
    if host is None or not _beyond_loopback(host):
        return None
    shown = host if host not in _ALL_INTERFACES else f"{host or '*'} (all interfaces)"
    return f"{shown}:{port}"


def warn_if_exposed(endpoints: Iterable[str], config: Config, reactor: Any = None) -> list[str]:
    """Log one warning per exposed address when ``config`` has no ``apiKeys``; return them."""
    if config.api_keys:
        return []
    addresses: list[str] = []
    for endpoint in endpoints:
        address = exposed_address(endpoint, reactor)
        if address is not None and address not in addresses:
            addresses.append(address)
            log.warn(
                "SECURITY WARNING: listening on {address} without apiKeys: anyone who can "
                "reach this address can run, swap and unload your models. Set apiKeys in the "
                "config, or listen on 127.0.0.1 (-l tcp:8080:interface=127.0.0.1).",
                address=address)
    return addresses


# What a listening endpoint binds when its description names no interface.
_INTERFACE_DEFAULTS = {"tcp": "", "ssl": "", "tcp6": "::"}


def _description(endpoint: str) -> tuple[str, list[str], dict[str, str]]:
    """An endpoint description's type, positional and named arguments, split as
    ``serverFromString`` splits them: on colons not escaped with a backslash."""
    fields, current, escaped = [], "", False
    for char in endpoint:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    kind, positional, named = fields[0].lower(), [], {}
    for field in fields[1:]:
        name, equals, value = field.partition("=")
        if equals:
            named[name] = value
        else:
            positional.append(field)
    return kind, positional, named


def _beyond_loopback(host: str) -> bool:
    if host in _ALL_INTERFACES:
        return True
    if host.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return True


def _bound_address(fileno: int, family: Any) -> tuple[str | None, int | None]:
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None, None
    try:
        with socket.socket(family, socket.SOCK_STREAM, fileno=socket.dup(fileno)) as s:
            address = s.getsockname()
    except OSError:
        return None, None
    return str(address[0]), int(address[1])
