"""Embedding leaves the process alone: building a service or its resource tree starts,
attaches and changes nothing; each service applies its own log rules while it runs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from fakes import make_config, model
from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from llamaswap import LlamaSwapService
from llamaswap.logs import get_logger
from llamaswap.tap import Options, build_service
from llamaswap.web.root import build_root


@pytest.fixture
def shown() -> Iterator[list[str]]:
    """The messages of this module's test events that reach the process log."""
    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = str(event.get("log_format", ""))
        if text.startswith(("quiet ", "chatty ", "module ")):
            seen.append(text)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def test_building_a_service_and_its_tree_starts_nothing() -> None:
    clock = MemoryReactorClock()
    threads = threading.active_count()
    service = LlamaSwapService(make_config(model("a"), model("b")), clock)
    children = list(service)
    again = build_root(service)  # a second tree for the same service
    assert again is not service.resource
    assert list(service) == children  # the tree attached no service
    assert not service.running and not any(child.running for child in service)
    assert clock.getDelayedCalls() == [] and clock.triggers == {}
    assert clock.tcpServers == [] and clock.tcpClients == []
    assert threading.active_count() == threads
    assert all(process.pid is None for process in service.processes.values())


def test_build_service_installs_no_signal_handler(tmp_path: Path) -> None:
    """Only ``tap.makeService`` (twistd's own process) wires SIGHUP and SIGUSR1."""
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  m:\n    cmd: server --port ${PORT}\n")
    options = Options()
    options.parseOptions(["-c", str(config), "-l", "tcp:0:interface=127.0.0.1",
                          "--state-file=", "--watch-config"])
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGHUP, signal.SIGUSR1)}
    build_service(options)
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_constructing_a_service_changes_no_log_rule(shown: list[str]) -> None:
    LlamaSwapService(make_config(model("a"), log_level="debug", log_to_stdout="none"),
                     MemoryReactorClock())
    log = get_logger("llamaswap.test.embedding")
    log.debug("module debug")
    log.info("module info")
    assert shown == ["module info"]  # the defaults: info and above, to the process log


@pytest_twisted.ensureDeferred
async def test_two_services_in_one_process_keep_their_own_log_level(shown: list[str]) -> None:
    quiet = LlamaSwapService(make_config(model("a"), log_level="error"), reactor)
    chatty = LlamaSwapService(make_config(model("b"), log_level="debug"), reactor)
    quiet.startService()
    chatty.startService()
    try:
        for service, name in ((quiet, "quiet"), (chatty, "chatty")):
            service.router.log.debug(name + " debug")
            service.router.log.error(name + " error")
        assert shown == ["quiet error", "chatty debug", "chatty error"]
        chatty_log = chatty.observability.proxy_log.text()
        quiet_log = quiet.observability.proxy_log.text()
        assert "chatty debug" in chatty_log and "quiet" not in chatty_log
        assert "quiet error" in quiet_log and "chatty" not in quiet_log
        # An event of no service's part goes out once, as the most verbose service allows.
        get_logger("llamaswap.test.embedding").debug("module debug")
        assert shown[-1] == "module debug" and shown.count("module debug") == 1
    finally:
        await quiet.stopService()
        await chatty.stopService()
    chatty.router.log.debug("chatty after its stop")
    chatty.router.log.info("chatty info after its stop")
    assert shown[-1] == "chatty info after its stop"  # the defaults again
    assert "chatty after its stop" not in shown
