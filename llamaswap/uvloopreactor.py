"""Twisted's asyncio reactor running on uvloop: ``twistd --reactor=uvloop -n llamaswap ...``.

uvloop is an optional extra (``pip install 'llamaswap[uvloop]'``). Installing this reactor
makes uvloop the asyncio event loop and then installs ``AsyncioSelectorReactor`` on it.
``bench/run.py`` compares it with the default epoll reactor; see README, "Performance".
"""

from __future__ import annotations


def install() -> None:
    """Install the asyncio reactor on a fresh uvloop event loop."""
    import asyncio

    import uvloop
    from twisted.internet import asyncioreactor

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
