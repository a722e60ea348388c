"""The fast path's one switch: ``fastPath`` in the config, ``LLAMASWAP_FAST_PATH`` in the
environment (which wins), as the service's site applies them, and the access log kept."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from llamaswap.config import ConfigError, parse_config
from llamaswap.service import AccessLoggedRequest, LlamaSwapService
from llamaswap.web.fast import ENV_VAR, PIECES, working
from llamaswap.web.fast.request import FastProcessRequest

MODELS = "models:\n  m:\n    cmd: x --port ${PORT}\n"


def _site(text: str) -> Any:
    return LlamaSwapService(parse_config(text, "c.yaml"), Clock()).site()


def test_fast_path_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert parse_config(MODELS, "c.yaml").fast_path is True
    assert _site(MODELS).fast_path.pieces == working()


def test_config_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    site = _site("fastPath: false\n" + MODELS)
    assert site.fast_path.pieces == frozenset()
    channel = site.buildProtocol(None)
    assert channel.requestFactory is AccessLoggedRequest


@pytest.mark.parametrize(("config", "env", "expected"), [
    ("fastPath: false\n", "1", set(PIECES)),
    ("fastPath: true\n", "0", set()),
    ("", "off", set()),
    ("fastPath: false\n", "request,writes", {"request", "writes"}),
])
def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch, config: str, env: str,
                              expected: set[str]) -> None:
    monkeypatch.setenv(ENV_VAR, env)
    assert _site(config + MODELS).fast_path.pieces == frozenset(expected) & working()


def test_a_bad_fast_path_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match="fastPath"):
        parse_config("fastPath: sometimes\n" + MODELS, "c.yaml")


def test_with_the_fast_path_the_access_log_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1")
    site = _site(MODELS)
    channel = site.buildProtocol(None)
    factory = channel.requestFactory
    assert issubclass(factory, AccessLoggedRequest)
    assert issubclass(factory, FastProcessRequest) == ("request" in working())
    logged: list[object] = []
    monkeypatch.setattr(AccessLoggedRequest, "_log_access",
                        lambda self, result: logged.append(self.code))
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert logged == [200]
    channel.connectionLost(Exception("done"))
