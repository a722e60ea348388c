"""Harness for the llama-swap compatibility suite.

The suite replays the scenarios of llama-swap's own Go tests against llamaswap from outside:
over HTTP against a real llamaswap on loopback driving the test upstream (``tests/upstream.py``),
or through ``llamaswap check-config``. The integration harness already provides the running
llamaswap; its fixtures are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.server import Site

from llamaswap.cli import main as llamaswap_cli
from tests.compat.support import Checked, EchoPeer, EchoResource, harness

llamaswap = harness.llamaswap
logged = harness.logged
# Also what ``from conftest import ...`` finds when this is the latest conftest pytest loaded
# and an integration module is imported from here (the contract tests do that).
body_json, upstream_cmd, wait_for = harness.body_json, harness.upstream_cmd, harness.wait_for


@pytest.fixture
def check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """``check_config(yaml_text) -> Checked``: run the ``check-config`` command on a file."""
    counter = iter(range(1_000_000))

    def run(yaml_text: str) -> Checked:
        path = tmp_path / f"config-{next(counter)}.yaml"
        path.write_text(yaml_text)
        capsys.readouterr()
        status = llamaswap_cli(["check-config", str(path), "--format", "json"])
        out, err = capsys.readouterr()
        return Checked(status, json.loads(out) if status == 0 else {}, err)

    return run


@pytest_twisted.async_yield_fixture
async def echo_peer() -> AsyncIterator[EchoPeer]:
    """A running echo peer on loopback."""
    resource = EchoResource()
    listening = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    yield EchoPeer(f"http://127.0.0.1:{listening.getHost().port}", resource)
    await listening.stopListening()
