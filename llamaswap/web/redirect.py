"""Redirects as llama-swap sends them, relative to where llamaswap is mounted."""

from __future__ import annotations

from twisted.web.server import Request

from llamaswap.context import context_of


def mount_prefix(request: Request) -> bytes:
    """Where llamaswap is mounted (``b""`` at a site's root, ``b"/llm"`` below ``/llm/``)."""
    depth = context_of(request).depth
    return b"".join(b"/" + segment for segment in (request.prepath or [])[:depth])


def redirect(request: Request, location: bytes, status: int = 302) -> None:
    """Answer a redirect to ``location`` (a path below llamaswap's mount point)."""
    request.setResponseCode(status)
    request.setHeader("location", mount_prefix(request) + location)
    request.setHeader("content-length", "0")
    request.finish()
