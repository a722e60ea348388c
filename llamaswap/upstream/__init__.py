"""llamaswap's one HTTP/1.1 client to model servers and peers.

``UpstreamClient`` serves the data path (``web/forward.py``), health probes (``health.py``)
and peers (``peers.py``): connections from public Twisted endpoints (``connect.py``), kept
alive in ``ConnectionPool`` (``pool.py``), responses framed by llhttp through ``httptools``
(``connection.py``). Design notes: ``docs/upstream-client.md``.
"""

from llamaswap.upstream.body import read_body
from llamaswap.upstream.client import UpstreamClient, may_retry_stale
from llamaswap.upstream.connection import UpstreamConnection, UpstreamResponse
from llamaswap.upstream.errors import BadResponse, NoAnswer, ResponseHeaderTimeout, UpstreamError
from llamaswap.upstream.pool import ConnectionPool

__all__ = [
    "BadResponse",
    "ConnectionPool",
    "NoAnswer",
    "ResponseHeaderTimeout",
    "UpstreamClient",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamResponse",
    "may_retry_stale",
    "read_body",
]
