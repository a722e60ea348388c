"""How a request to a model server or peer can fail before its response began."""

from __future__ import annotations

import builtins

from twisted.internet import error as twisted_errors


class Unanswered(Exception):
    """No byte of a response came back. ``sent``: whether the request may have reached the
    server (False: the connection was refused, nothing was sent)."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def unanswered(error: BaseException | None) -> Unanswered | None:
    """The ``Unanswered`` behind ``error`` (its cause chain); a refused connection counts."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, Unanswered):
            return error
        if isinstance(error, (twisted_errors.ConnectionRefusedError,
                              builtins.ConnectionRefusedError)):
            return Unanswered(str(error) or "connection refused", sent=False)
        error = error.__cause__ or error.__context__
        seen += 1
    return None


class UpstreamError(Exception):
    """The request could not be sent, or no complete response head came back."""


class BadResponse(UpstreamError):
    """The answer is not well-formed HTTP/1.1 (as llhttp judges it, or too big a head)."""


class ResponseHeaderTimeout(UpstreamError):
    """No response head within the origin's ``timeouts.responseHeader``. Not ``NoAnswer``:
    the server may be working on the request, so it is not sent again."""


class NoAnswer(UpstreamError, Unanswered):
    """Refused, or closed before any byte of a response: the request may be sent again.

    ``reused``: the connection had served an earlier request (a stale pooled connection
    the server closed meanwhile), which the client retries itself for idempotent requests.
    """

    def __init__(self, message: str, sent: bool, reused: bool = False) -> None:
        super().__init__(message, sent=sent)
        self.reused = reused
