"""A tiny OpenAI-compatible model server for demos, tests and benchmarks.

``python -m llamaswap.demo --port N`` answers ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings`` and ``/v1/rerank`` with deterministic fake output, so llamaswap can be tried
on a machine with no GPU and no model files, and so the test-suite has a real upstream process.

It deliberately uses the standard library only (no Twisted): llamaswap spawns it as a child
process and every millisecond of interpreter start-up is added to each model swap. The HTTP/1.1
server is a minimal hand-written asyncio one (keep-alive, ``Content-Length`` and chunked request
bodies, chunked responses) so hundreds of concurrent token streams cost one coroutine each.
Every streamed event is written to the socket as soon as it is produced (TCP_NODELAY is the
asyncio default), which is what lets tests check the proxy does not buffer streams.

Modules: ``protocol`` (the HTTP/1.1 server side), ``fakes`` (deterministic text and
vectors), ``completions`` (the chat and text completion shapes), ``server`` (``DemoServer``,
the routes), ``cli`` (options, ``main``).

``tests/upstream.py`` subclasses :class:`DemoServer` to add fault injection; the hooks it uses
are :meth:`DemoServer.extra_route`, :meth:`DemoServer.before_inference`,
:meth:`DemoServer.on_stream_token`, :meth:`DemoServer.on_stream_end`,
:meth:`DemoServer.timings`, :meth:`DemoServer.on_listening`,
:meth:`DemoServer.install_signal_handlers` and :meth:`DemoServer.is_healthy`.
"""

from llamaswap.demo.cli import build_parser, main, options_from_args, run
from llamaswap.demo.protocol import BadRequest, Handler, Request, Responder
from llamaswap.demo.server import DemoOptions, DemoServer

__all__ = ["BadRequest", "DemoOptions", "DemoServer", "Handler", "Request", "Responder",
           "build_parser", "main", "options_from_args", "run"]
