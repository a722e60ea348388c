"""A reload applies the observability settings too: ``logToStdout``, ``logTimeFormat``,
``captureBuffer``, the activity store's size and file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest_twisted
from fakes import make_config, model
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.task import Clock

from llamaswap.activity import COLUMNS
from llamaswap.observability import Observability

ROW = {**{name: 1 for name in COLUMNS[1:]}, "model": "m", "endpoint": "/v1/chat/completions"}


class StubRouter:
    def on_stop(self, listener: Any) -> None:
        pass

    def on_swap(self, listener: Any) -> None:
        pass

    def queued(self) -> int:
        return 0

    def circuit_open(self, model: str) -> bool:
        return False

    def in_flight(self, model: str) -> int:
        return 0


def test_log_to_stdout_and_time_format_follow_a_reload() -> None:
    config = make_config(model("m"), log_to_stdout="upstream")
    obs = Observability(config, {}, StubRouter(), Clock())
    obs.proxy_log.append("from the proxy")
    obs.upstream_log.append("from a model")
    assert obs.combined_log.text() == "from a model\n"
    obs.reconfigure(replace(config, log_to_stdout="proxy", log_time_format="kitchen"))
    obs.proxy_log.append("proxy again")
    obs.upstream_log.append("model again")
    assert obs.combined_log.text() == "from a model\nproxy again\n"
    assert obs._collector.time_format == "kitchen"


def test_a_smaller_capture_buffer_evicts_the_oldest_captures_at_once() -> None:
    config = make_config(model("m"), capture_buffer_bytes=100)
    obs = Observability(config, {}, StubRouter(), Clock())
    for row_id in (1, 2, 3):
        assert obs.captures.put(row_id, {"id": row_id}, 30)
    obs.reconfigure(replace(config, capture_buffer_bytes=60))
    assert (1 in obs.captures, 2 in obs.captures, 3 in obs.captures) == (False, True, True)
    assert obs.captures.budget == 60


@pytest_twisted.ensureDeferred
async def test_a_new_store_path_opens_the_new_store_and_closes_the_old(tmp_path: Path) -> None:
    first, second = tmp_path / "one.db", tmp_path / "two.db"
    config = make_config(model("m"), store_path=str(first))
    obs = Observability(config, {}, StubRouter(), reactor)
    parent = MultiService()
    obs.store.setServiceParent(parent)
    parent.startService()
    old = obs.store
    try:
        await old.add(dict(ROW))
        obs.reconfigure(replace(config, store_path=str(second), store_max_rows=7))
        assert obs.store is not old and obs.store.parent is parent and old.parent is None
        assert (obs.store.path, obs.store.max_rows) == (str(second), 7)
        await obs.store.add(dict(ROW))
        assert second.exists()
    finally:
        await parent.stopService()
