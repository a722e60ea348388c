"""The loud warning for listening beyond loopback without ``apiKeys``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from llamaswap.config import parse_config
from llamaswap.exposure import exposed_address, warn_if_exposed
from llamaswap.tap import Options, build_service

OPEN = "models:\n  m:\n    cmd: server --port ${PORT}\n"
KEYED = OPEN + "apiKeys: [sekrit-key]\n"


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if "SECURITY WARNING" in event.get("log_format", ""):
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)  # type: ignore[arg-type]
    yield seen
    globalLogPublisher.removeObserver(observe)  # type: ignore[arg-type]


@pytest.mark.parametrize(("endpoint", "exposed"), [
    ("tcp:8080", "* (all interfaces):8080"),
    ("tcp:8080:interface=0.0.0.0", "0.0.0.0 (all interfaces):8080"),
    (r"tcp6:8080:interface=\:\:", ":: (all interfaces):8080"),
    ("tcp:8080:interface=192.168.1.7", "192.168.1.7:8080"),
    ("tcp:8080:interface=gpu-box.lan", "gpu-box.lan:8080"),
    ("tcp:8080:interface=127.0.0.1", None),
    ("tcp:8080:interface=127.0.0.53", None),
    (r"tcp6:8080:interface=\:\:1", None),
    ("tcp:8080:interface=localhost", None),
    ("unix:/run/llamaswap.sock", None),
])
def test_which_addresses_count_as_exposed(endpoint: str, exposed: str | None) -> None:
    assert exposed_address(endpoint) == exposed


def test_warns_once_per_exposed_address_without_api_keys(warnings: list[str]) -> None:
    config = parse_config(OPEN, "c.yaml")
    found = warn_if_exposed(["tcp:8080", "tcp:8080", "tcp:9090:interface=127.0.0.1",
                             "tcp:9091:interface=10.0.0.2"], config)
    assert found == ["* (all interfaces):8080", "10.0.0.2:9091"]
    assert len(warnings) == 2
    assert "without apiKeys" in warnings[0] and "* (all interfaces):8080" in warnings[0]
    assert "10.0.0.2:9091" in warnings[1]


def test_no_warning_with_api_keys_or_on_loopback(warnings: list[str]) -> None:
    assert warn_if_exposed(["tcp:8080"], parse_config(KEYED, "c.yaml")) == []
    assert warn_if_exposed(["tcp:1:interface=127.0.0.1"], parse_config(OPEN, "c.yaml")) == []
    assert warnings == []


def test_an_adopted_socket_is_judged_by_its_bound_address() -> None:
    """``systemd:`` sockets: the address comes from the socket itself."""
    from twisted.internet.endpoints import AdoptedStreamServerEndpoint

    for interface, exposed in (("127.0.0.1", False), ("0.0.0.0", True)):
        with socket.socket() as s:
            s.bind((interface, 0))
            endpoint = AdoptedStreamServerEndpoint(None, s.fileno(), socket.AF_INET)
            from llamaswap import exposure

            host, port = exposure._bound_address(endpoint.fileno, endpoint.addressFamily)
            assert (host, port) == (interface, s.getsockname()[1]) and host is not None
            assert exposure._beyond_loopback(host) is exposed


def test_twistd_makeservice_warns(tmp_path: Path, warnings: list[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(OPEN)
    options = Options()
    options.parseOptions(["-c", str(path), "-l", "tcp:0:interface=0.0.0.0",
                          "-l", "127.0.0.1:0"])
    build_service(options)
    assert len(warnings) == 1 and "0.0.0.0 (all interfaces):0" in warnings[0]
