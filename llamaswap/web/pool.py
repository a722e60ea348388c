"""Connection pools for upstream traffic, without a log line per connection."""

from __future__ import annotations

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # Factory logs "Starting factory ..." per connection otherwise


class QuietPool(HTTPConnectionPool):
    _factory = _QuietFactory
