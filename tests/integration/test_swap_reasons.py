"""The reasons on ``/api/events``' ``modelStatus`` events, over loopback with real models."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq
from conftest import upstream_cmd, wait_for
from twisted.internet.protocol import Protocol

CONFIG = f"""
models:
  alpha:
    cmd: {upstream_cmd("alpha")}
  beta:
    cmd: {upstream_cmd("beta")}
"""


class Events(Protocol):
    """The ``modelStatus`` events of an ``/api/events`` stream, as they arrive."""

    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def statuses(self) -> list[dict[str, dict[str, Any]]]:
        """Each ``modelStatus`` event, as the models' entries by id."""
        out = []
        for line in self.data.decode().split("\n"):
            if line.startswith("data:"):
                envelope = json.loads(line[5:])
                if envelope["type"] == "modelStatus":
                    out.append({m["id"]: m for m in json.loads(envelope["data"])})
        return out

    def entered(self, model: str, state: str) -> dict[str, Any]:
        """``model``'s entry in the first event that shows it in ``state``."""
        return next(s[model] for s in self.statuses() if s[model]["state"] == state)


@pytest_twisted.ensureDeferred
async def test_events_say_why_a_model_was_swapped_in_and_out_and_unloaded(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    response = await swapper.get("/api/events", unbuffered=True)
    events = Events()
    response.deliverBody(events)
    await wait_for(lambda: events.statuses())
    assert events.statuses()[0]["alpha"]["stopReason"] is None  # never ran

    assert (await swapper.chat("alpha")).code == 200
    assert events.entered("alpha", "starting")["swapReason"] == "a request for alpha"
    assert (await swapper.chat("beta")).code == 200
    stopping = events.entered("alpha", "stopping")
    assert stopping["stopReason"] == "swapped out for beta (same swap group)"
    assert stopping["stopCause"] == "swap"
    starting = events.entered("beta", "starting")
    assert starting["swapReason"] == "a request for beta evicted alpha (same swap group)"

    unload = await swapper.client.post(f"{swapper.url}/api/models/unload/beta")
    assert unload.code == 200
    await treq.content(unload)
    await wait_for(lambda: any(s["beta"]["state"] == "stopped" and s["beta"]["stopCause"]
                               == "unload" for s in events.statuses()))
    assert [s["beta"]["stopCause"] for s in events.statuses()
            if s["beta"]["state"] == "stopping"] == ["unload"]
    final = events.statuses()[-1]
    assert final["beta"]["stopReason"] == "unloaded through the unload API"
    assert final["alpha"]["stopCause"] == "swap"  # why it is still stopped
    transport: Any = events.transport
    transport.stopProducing()
    await wait_for(lambda: swapper.service.observability.bus.subscribers == 0)
