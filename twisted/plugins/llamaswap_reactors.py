"""Registers ``twistd --reactor=uvloop`` (needs the optional ``uvloop`` package)."""

from twisted.application.reactors import Reactor

uvloop = Reactor(
    "uvloop",
    "llamaswap.uvloopreactor",
    "asyncio reactor on uvloop (pip install 'llamaswap[uvloop]')",
)
