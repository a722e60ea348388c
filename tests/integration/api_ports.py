"""A model on a port picked for it alone, for tests that start several models.

``startPort: <free port>`` (conftest) hands out consecutive ports, and Linux gives
``connect()`` the ports next to the ones ``bind(0)`` returns, so the second model's port is
sometimes already an outgoing connection's ("address already in use"). ``bind(0)`` ports
are of the other parity, so a port from ``free_port()`` per model avoids that.
"""

from __future__ import annotations

from conftest import free_port, upstream_cmd


def own_port_model(name: str, *extra: str) -> str:
    """``cmd:`` and ``proxy:`` lines (indented for a model block) for the test upstream."""
    port = free_port()
    return (f"cmd: {upstream_cmd(name, *extra).replace('${PORT}', str(port))}\n"
            f"    proxy: http://127.0.0.1:{port}")
