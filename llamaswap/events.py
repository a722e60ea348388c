"""Publish/subscribe for ``/api/events``.

Publishing is synchronous and cheap: every subscriber is a callable that must return at
once (an SSE client queues or drops on its own side, see ``web.observe``). Envelopes have
llama-swap's shape, ``{"type": ..., "data": "<JSON text>"}`` (``data`` is encoded twice),
so clients written for llama-swap's UI can read them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Envelope = dict[str, str]
Subscriber = Callable[[Envelope], None]

MODEL_STATUS = "modelStatus"
LOG_DATA = "logData"
IN_FLIGHT = "inflight"
ACTIVITY = "activity"
UI_CONFIG = "uiConfig"
PROFILE_CHANGED = "profileChanged"
QUEUE = "queue"
"""llamaswap's own event: ``{"queued": <requests waiting for a model>}`` when it changes."""


def envelope(kind: str, payload: Any) -> Envelope:
    return {"type": kind, "data": json.dumps(payload, separators=(",", ":"))}


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Deliver every later envelope to ``subscriber``; returns the unsubscribe function."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, kind: str, payload: Any) -> None:
        if not self._subscribers:
            return
        message = envelope(kind, payload)
        for subscriber in list(self._subscribers):
            subscriber(message)
