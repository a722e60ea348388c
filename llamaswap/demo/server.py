"""``DemoServer``: the demo's routes (index page, chat, completions, embeddings, rerank,
health), with the hooks ``tests/upstream.py`` overrides for fault injection."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import os
import signal
import struct
import time
import traceback
from dataclasses import dataclass
from typing import Any

from llamaswap.demo.completions import CHAT, TEXT, Kind, timings, usage
from llamaswap.demo.fakes import content_text, count_tokens, hash_vector, relevance, tokenize
from llamaswap.demo.protocol import BadRequest, Handler, Request, Responder, read_request

DEFAULT_EMBEDDING_DIMENSIONS = 16


@dataclass
class DemoOptions:
    """Command-line settings of the demo server."""

    host: str = "127.0.0.1"
    port: int = 8080
    model: str = "demo"
    startup_delay: float = 0.0
    token_delay: float = 0.02
    reply: str | None = None
    max_tokens: int | None = None
    quiet: bool = False


class DemoServer:
    """The demo server: routing, fake inference and the asyncio HTTP/1.1 plumbing."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.created = int(time.time())
        self.started_at = time.monotonic()
        self.ready_at = self.started_at + max(0.0, options.startup_delay)
        self.server: asyncio.Server | None = None
        self.stopping: asyncio.Event | None = None
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/": (("GET", "HEAD"), self.handle_index),
            "/health": (("GET", "HEAD"), self.handle_health),
            "/v1/models": (("GET", "HEAD"), self.handle_models),
            "/models": (("GET", "HEAD"), self.handle_models),
            "/v1/chat/completions": (("POST",), self.handle_chat),
            "/chat/completions": (("POST",), self.handle_chat),
            "/v1/completions": (("POST",), self.handle_completions),
            "/completions": (("POST",), self.handle_completions),
            "/v1/embeddings": (("POST",), self.handle_embeddings),
            "/embeddings": (("POST",), self.handle_embeddings),
            "/v1/rerank": (("POST",), self.handle_rerank),
            "/rerank": (("POST",), self.handle_rerank),
        }

    # ----------------------------------------------------------------- logging

    def log(self, message: str) -> None:
        """One flushed line on stdout, so a parent process sees it immediately."""
        if not self.options.quiet:
            print(f"demo: {message}", flush=True)

    # --------------------------------------------------------------- lifecycle

    def is_healthy(self) -> bool:
        """True once the simulated model load (``--startup-delay``) has finished."""
        return time.monotonic() >= self.ready_at

    async def serve(self) -> None:
        """Listen, then run until SIGTERM/SIGINT (or :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        # Before listening: once a client can connect, SIGTERM must already mean "exit 0".
        self.install_signal_handlers(loop)
        self.server = await asyncio.start_server(
            self._on_connection,
            self.options.host,
            self.options.port,
            backlog=1024,
        )
        sock = self.server.sockets[0].getsockname()
        self.log(f"model={self.options.model} listening on {sock[0]}:{sock[1]}")
        self.on_listening(loop)
        await self.stopping.wait()
        self.server.close()

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM and SIGINT stop the server promptly; the process then exits 0."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    def on_listening(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hook called once the socket is bound (used by the test upstream)."""

    def stop(self) -> None:
        """Ask :meth:`serve` to return; in-flight streams are abandoned, not drained."""
        if self.stopping is not None:
            self.stopping.set()

    # ------------------------------------------------------------- HTTP plumbing

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        peer = peername[0] if isinstance(peername, tuple) else "-"
        try:
            while True:
                try:
                    request = await read_request(reader, writer, peer)
                except BadRequest as exc:
                    req = Request("GET", "/", "HTTP/1.1", [("Connection", "close")], peer=peer)
                    await Responder(writer, req).send_error(exc.status, exc.message)
                    return
                if request is None:
                    return
                responder = Responder(writer, request)
                await self._dispatch(request, responder)
                if not responder.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # shutting down with this connection idle or mid-request: nothing to report
        finally:
            writer.close()

    async def _dispatch(self, request: Request, responder: Responder) -> None:
        start = time.monotonic()
        aborted = False
        try:
            handler = self.extra_route(request)
            if handler is None:
                route = self.routes.get(request.path)
                if route is None:
                    handler = self.handle_not_found
                elif request.method not in route[0]:
                    handler = self.handle_method_not_allowed
                else:
                    handler = route[1]
            await handler(request, responder)
        except ConnectionError:
            responder.keep_alive = False
            aborted = True
            raise
        except Exception as exc:  # a bug in a handler must not kill the server
            traceback.print_exc()
            responder.keep_alive = False
            if not responder.started:
                await responder.send_error(500, f"internal error: {exc!r}", "server_error")
            else:
                raise ConnectionResetError("handler failed mid-response") from exc
        finally:
            elapsed = (time.monotonic() - start) * 1000
            kind = " stream" if responder.streaming else ""
            kind += " (client went away)" if aborted else ""
            if request.path != "/health":  # polled many times a second while loading
                self.log(
                    f'{request.peer} "{request.method} {request.target}" '
                    f"{responder.status or '-'} {elapsed:.1f}ms{kind}"
                )

    # ------------------------------------------------------------------ hooks

    def extra_route(self, request: Request) -> Handler | None:
        """Hook: return a handler to take over ``request`` before normal routing."""
        return None

    async def before_inference(self, request: Request, body: dict[str, Any]) -> None:
        """Hook: called after the JSON body is parsed, before any inference response."""

    async def on_stream_token(self, body: dict[str, Any], index: int) -> None:
        """Hook: called before token ``index`` (0-based) of a stream is sent."""

    async def on_stream_end(self, body: dict[str, Any], n_tokens: int) -> None:
        """Hook: called after the last token, before the finish chunk and ``[DONE]``."""

    # --------------------------------------------------------------- handlers

    async def handle_not_found(self, request: Request, responder: Responder) -> None:
        """Unknown path: 404 in OpenAI error shape."""
        await responder.send_error(
            404, f"Not found: {request.method} {request.path}", "not_found_error"
        )

    async def handle_method_not_allowed(self, request: Request, responder: Responder) -> None:
        """Known path, wrong method."""
        await responder.send_error(405, f"Method {request.method} not allowed on {request.path}")

    async def handle_index(self, request: Request, responder: Responder) -> None:
        """A small page at ``/``, as llama-server serves its web page there: llama-swap's UI
        loads a model with ``GET /upstream/<model>/`` and counts anything but 2xx as failed."""
        model = html.escape(self.options.model)
        page = (
            "<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{model}</title></head><body><h1>{model}</h1>"
            "<p>llamaswap demo model server: fake, deterministic answers on "
            "<code>/v1/chat/completions</code>, <code>/v1/completions</code>, "
            "<code>/v1/embeddings</code> and <code>/v1/rerank</code>.</p></body></html>\n"
        )
        await responder.send(200, page.encode("utf-8"), "text/html; charset=utf-8")

    async def handle_health(self, request: Request, responder: Responder) -> None:
        """llama.cpp-style health: 503 while the simulated model loads, then 200."""
        if self.is_healthy():
            await responder.send_json(200, {"status": "ok"})
        else:
            await responder.send_json(503, {"status": "loading"})

    async def handle_models(self, request: Request, responder: Responder) -> None:
        """The one model this server pretends to serve."""
        model = {
            "id": self.options.model,
            "object": "model",
            "created": self.created,
            "owned_by": "llamaswap-demo",
        }
        await responder.send_json(200, {"object": "list", "data": [model]})

    async def _parse_inference(
        self, request: Request, responder: Responder
    ) -> dict[str, Any] | None:
        """Shared prologue of inference endpoints: loading gate, JSON parsing, hooks.

        Returns None when an error response has already been sent.
        """
        if not self.is_healthy():
            await responder.send_error(503, "Loading model", "unavailable_error")
            return None
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            await responder.send_error(400, f"invalid JSON in request body: {exc}")
            return None
        if not isinstance(body, dict):
            await responder.send_error(400, "request body must be a JSON object")
            return None
        await self.before_inference(request, body)
        return body

    def reply_text(self, prompt: str) -> str:
        """The fixed ``--reply`` or a short echo of the prompt, so the demo visibly works."""
        if self.options.reply is not None:
            return self.options.reply
        prompt = " ".join(prompt.split())
        if not prompt:
            return f"Hello from the llamaswap demo model {self.options.model}."
        if len(prompt) > 200:
            prompt = prompt[:200].rstrip() + "…"
        return f"You said: {prompt}"

    def completion_tokens(self, body: dict[str, Any], text: str) -> tuple[list[str], str]:
        """Tokens to emit and the finish reason, honouring ``--max-tokens`` and the request."""
        tokens = tokenize(text)
        limits = [self.options.max_tokens]
        for key in ("max_completion_tokens", "max_tokens", "n_predict"):
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                limits.append(value)
        cap = min((lim for lim in limits if lim is not None), default=None)
        if cap is not None and len(tokens) > cap:
            return tokens[:cap], "length"
        return tokens, "stop"

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        """OpenAI ``usage`` object."""
        return usage(prompt_tokens, completion_tokens)

    def timings(
        self, prompt_tokens: int, completion_tokens: int, seconds: float
    ) -> dict[str, float]:
        """Hook: llama.cpp-style ``timings`` object (llama-swap's metrics read these)."""
        return timings(prompt_tokens, completion_tokens, seconds)

    async def handle_chat(self, request: Request, responder: Responder) -> None:
        """``/v1/chat/completions``: echo the last user message, optionally as SSE."""
        await self._complete(request, responder, CHAT)

    async def handle_completions(self, request: Request, responder: Responder) -> None:
        """``/v1/completions``: legacy text completion, same behaviour as chat."""
        await self._complete(request, responder, TEXT)

    async def _complete(self, request: Request, responder: Responder, kind: Kind) -> None:
        """Either completion shape (``completions.py``), whole or streamed."""
        body = await self._parse_inference(request, responder)
        if body is None:
            return
        prompt_text, answered = kind.prompt(body)
        tokens, finish = self.completion_tokens(body, self.reply_text(answered))
        prompt_tokens = count_tokens(prompt_text)
        completion_id = f"{kind.id_prefix}-{os.urandom(12).hex()}"
        created = int(time.time())
        if body.get("stream") is True:
            await self._stream(responder, body, kind, tokens, finish, prompt_tokens,
                               completion_id, created)
            return
        await responder.send_json(
            200,
            {
                "id": completion_id,
                "object": kind.object_name,
                "created": created,
                "model": self.options.model,
                "system_fingerprint": "llamaswap-demo",
                "choices": [kind.choice("".join(tokens), finish)],
                "usage": self.usage(prompt_tokens, len(tokens)),
                "timings": self.timings(prompt_tokens, len(tokens), 0.001),
            },
        )

    async def _stream(self, responder: Responder, body: dict[str, Any], kind: Kind,
                      tokens: list[str], finish: str, prompt_tokens: int, completion_id: str,
                      created: int) -> None:
        """Server-sent events, one token per event, each flushed as soon as it is made."""
        model = self.options.model
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {
                "id": completion_id,
                "object": kind.chunk_object,
                "created": created,
                "model": model,
                "system_fingerprint": "llamaswap-demo",
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

        start = time.monotonic()
        await responder.start_stream("text/event-stream")
        if kind.opening is not None:
            await responder.write(event([kind.opening]))
        for i, token in enumerate(tokens):
            if i and self.options.token_delay > 0:
                await asyncio.sleep(self.options.token_delay)
            if responder.closed:
                raise ConnectionResetError("client went away mid-stream")
            await self.on_stream_token(body, i)
            await responder.write(event([kind.chunk_choice(token, None)]))
        await self.on_stream_end(body, len(tokens))
        elapsed = time.monotonic() - start
        await responder.write(
            event([kind.chunk_choice(None, finish)],
                  timings=self.timings(prompt_tokens, len(tokens), elapsed))
        )
        if include_usage:
            await responder.write(event([], usage=self.usage(prompt_tokens, len(tokens))))
        await responder.write(b"data: [DONE]\n\n")
        await responder.end_stream()

    async def handle_embeddings(self, request: Request, responder: Responder) -> None:
        """``/v1/embeddings``: deterministic unit vectors from a hash of each input."""
        body = await self._parse_inference(request, responder)
        if body is None:
            return
        raw = body.get("input", body.get("content"))
        if isinstance(raw, str):
            inputs: list[Any] = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [raw]  # a single pre-tokenised input
        elif isinstance(raw, list) and raw:
            inputs = raw
        else:
            await responder.send_error(400, "'input' must be a string or a non-empty list")
            return
        dims = body.get("dimensions", DEFAULT_EMBEDDING_DIMENSIONS)
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 65536:
            await responder.send_error(400, "'dimensions' must be an integer in 1..65536")
            return
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        prompt_tokens = 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else json.dumps(item)
            prompt_tokens += len(item) if isinstance(item, list) else count_tokens(text)
            vector = hash_vector(text, dims, self.options.model)
            embedding: list[float] | str = vector
            if as_base64:  # the official openai client asks for base64 by default
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        await responder.send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": self.options.model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            },
        )

    async def handle_rerank(self, request: Request, responder: Responder) -> None:
        """``/v1/rerank``: llama.cpp/Jina shape, sorted by a deterministic relevance score."""
        body = await self._parse_inference(request, responder)
        if body is None:
            return
        query = body.get("query")
        documents = body.get("documents", body.get("texts"))
        if not isinstance(query, str) or not isinstance(documents, list):
            await responder.send_error(400, "'query' (string) and 'documents' (list) are required")
            return
        texts = [
            d if isinstance(d, str) else content_text([d]) if isinstance(d, dict) else str(d)
            for d in documents
        ]
        results: list[dict[str, Any]] = []
        for index, text in enumerate(texts):
            result: dict[str, Any] = {"index": index, "relevance_score": relevance(query, text)}
            if body.get("return_documents"):
                result["document"] = {"text": text}
            results.append(result)
        results.sort(key=lambda r: (-r["relevance_score"], r["index"]))
        top_n = body.get("top_n")
        if isinstance(top_n, int) and not isinstance(top_n, bool) and top_n >= 0:
            results = results[:top_n]
        tokens = count_tokens(query) + sum(count_tokens(t) for t in texts)
        await responder.send_json(
            200,
            {
                "object": "list",
                "model": self.options.model,
                "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )
