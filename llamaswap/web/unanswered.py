"""A request the model never answered: refused, or closed before any byte of a response.

When a model dies, requests can reach its port before llamaswap has noticed the exit: the
connection is refused, or a kept-alive connection is reset. Nothing of a response was
relayed, so the request can go back to the queue and be served by the restarted model
instead of failing with 502. This module says what counts (``Unanswered``, which the
upstream HTTP client raises, and ``unanswered()``, which also knows a plain refused connect)
and decides when to send a request again (``may_replay``); ``replay_wait`` waits, bounded,
for the exit to be noticed. A response that has begun is never sent again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import TimeoutError

from llamaswap.upstream.errors import Unanswered, unanswered

if TYPE_CHECKING:
    from llamaswap.process import ModelProcess

__all__ = ["Unanswered", "may_replay", "replay_wait", "unanswered"]

MAX_REPLAYS_REFUSED = 2
"""The connection was refused: the model cannot have seen the request."""
MAX_REPLAYS_SENT = 1
"""The request went out on a connection that closed with no answer: the model most likely
died before reading it, but a request that crashes the model is not sent a third time."""
EXIT_NOTICE_TIMEOUT = 10.0
"""Seconds to wait for a model server known to be dead to be noticed as exited."""


def may_replay(error: Unanswered, body: object, replays: int) -> bool:
    """Whether a request that got ``error`` after ``replays`` replays may be sent again.

    The body must still be at hand: bytes (or none) always are; a body streamed from its
    spool file (``IBodyProducer``) only when nothing was sent, since sending consumed it.
    """
    if error.sent and body is not None and not isinstance(body, bytes):
        return False
    return replays < (MAX_REPLAYS_SENT if error.sent else MAX_REPLAYS_REFUSED)


async def replay_wait(process: ModelProcess, run: int, clock: Any,
                      timeout: float = EXIT_NOTICE_TIMEOUT) -> None:
    """Before a replay: if the model server is dead but its exit not yet noticed, wait
    (at most ``timeout``) until it is, so the replay waits for the restart instead of
    meeting the dead port again. A live server is tried again at once."""
    if not process.server_gone():
        return
    ended = process.run_ended(run)
    ended.addTimeout(timeout, clock)
    try:
        await ended
    except TimeoutError:
        pass
