"""The maximum request size, enforced while the body arrives.

twisted.web reads a whole request body (spooling it to a temporary file past 100 kB) before
any resource sees it. ``BodyLimitMixin`` checks the declared ``Content-Length`` as soon as the
headers are in, and counts chunked bodies as they stream (and, on a ``StrictChannelMixin``
channel, each chunk size as soon as it is read), so an oversized upload is answered 413 at
once (before a ``100 Continue``) and its bytes are discarded instead of stored. On such a
channel the connection is then closed at once (``close_after_answer``, ``web/strict.py``).
Resources check the size again (``too_large``) for Sites built without the mixin. On a
plain ``HTTPChannel`` the 413 takes the OpenAI shape: only a ``StrictChannelMixin`` channel
knows a request's target (``target_of``) before twisted.web has read the whole request.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.web.server import Request

from llamaswap.logs import get_logger
from llamaswap.web.errors import error_response
from llamaswap.web.routes import api_of_path

log = get_logger()


def body_length(content: IO[bytes] | None) -> int:
    if content is None:
        return 0
    position = content.tell()
    end = content.seek(0, 2)
    content.seek(position)
    return end


def limit_message(limit: int) -> str:
    return f"request body is larger than the maximum request size ({limit} bytes)"


class BodyLimitMixin:
    """Mix into a ``twisted.web.server.Request`` subclass (before it in the bases).

    The limit is the Site's ``max_request_size`` attribute, else its root resource's.
    """

    channel: Any
    content: Any
    requestHeaders: Any
    _llamaswap_received = 0
    _llamaswap_rejected = False

    def _llamaswap_limit(self) -> int | None:
        site = getattr(self.channel, "site", None)
        limit = getattr(site, "max_request_size", None)
        if limit is None:
            limit = getattr(getattr(site, "resource", None), "max_request_size", None)
        return limit

    def gotLength(self, length: int | None) -> None:
        limit = self._llamaswap_limit()
        if limit is not None and length is not None and length > limit:
            self._llamaswap_reject(limit)
            return
        super().gotLength(length)  # type: ignore[misc]

    def handleContentChunk(self, data: bytes) -> None:
        if self._llamaswap_rejected:
            return  # discarded: the 413 is already on its way
        self._llamaswap_received += len(data)
        limit = self._llamaswap_limit()
        if limit is not None and self._llamaswap_received > limit:
            self._llamaswap_reject(limit)
            return
        super().handleContentChunk(data)  # type: ignore[misc]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._llamaswap_rejected:
            self.channel.transport.loseConnection()  # everything was read: no RST
            return
        super().requestReceived(command, path, version)  # type: ignore[misc]

    def expect_more(self, remaining: int) -> None:
        """The channel read a chunk size: ``remaining`` more body bytes are announced.
        Refuse now if they cannot fit, rather than once they have arrived."""
        limit = self._llamaswap_limit()
        if (limit is not None and not self._llamaswap_rejected
                and self._llamaswap_received + remaining > limit):
            self._llamaswap_reject(limit)

    def _llamaswap_reject(self, limit: int) -> None:
        self._llamaswap_rejected = True
        if self.content is not None:
            self.content.close()
        self.content = None
        target_of = getattr(self.channel, "target_of", None)  # web/strict.py
        target = target_of(self) if target_of is not None else b"/"
        path = target.partition(b"?")[0].decode("latin-1")
        log.warn("rejected a request body over {limit} bytes on {path} (413)", limit=limit,
                 path=path)
        self.channel.transport.write(error_response(
            413, limit_message(limit), "request_too_large", api_of_path(path)))
        self.channel.persistent = False
        expect = self.requestHeaders.getRawHeaders(b"expect", [b""])[0]
        if expect.lower() == b"100-continue":
            # No "100 Continue" after the 413 (twisted.web sends it after gotLength).
            self.requestHeaders.removeHeader(b"expect")
        close_after_answer = getattr(self.channel, "close_after_answer", None)
        if close_after_answer is not None:
            close_after_answer()  # web/strict.py: closed at once, the rest read and dropped
        elif expect.lower() == b"100-continue":
            # The client waits for our go-ahead and will not send the body: close now.
            self.channel.transport.loseConnection()


class LimitedRequest(BodyLimitMixin, Request):
    """A plain ``Request`` with the body limit, for Sites of your own."""
