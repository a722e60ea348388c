"""Which model a request names, and the body to send upstream, as llama-swap reads them.

The model is read from a JSON body (recognised by its content type or, when the type is
missing or the form type ``curl -d`` sends, by its first character), a multipart ``model``
field, a urlencoded form, or the query string. The upstream body is the client's own bytes
unless something must change: ``useModelName``, filters, or a peer's bare model name. Large
bodies stay in twisted.web's spool file and are streamed from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode

from twisted.web.iweb import IBodyProducer
from twisted.web.server import Request

from llamaswap.filters import Filters, apply_filters
from llamaswap.web import multipart
from llamaswap.web.errors import header_text
from llamaswap.web.limits import body_length

IN_MEMORY_LIMIT = 1024 * 1024
"""Bodies we do not need to parse are streamed from the spool file past this size."""

MAX_JSON_DEPTH = 256
"""How deeply a JSON body may nest arrays and objects. Python's parser recurses, so without
a bound a body nested a thousand levels deep would fail in the parser, not as a 400."""


class BadRequest(Exception):
    """The client's request cannot be understood; answered with 400 before anything starts."""


def parse_json(raw: bytes) -> Any:
    """A JSON body, parsed; ``BadRequest`` if it is not JSON or nests deeper than
    ``MAX_JSON_DEPTH``."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadRequest(_too_deep()) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from e
    # Deeper than the bound needs that many brackets: most bodies are not walked at all.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(_too_deep())
    return data


def _too_deep() -> str:
    return f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels"


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (a scalar is 0), without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = (item.values() if isinstance(item, dict)
                    else item if isinstance(item, list) else None)
        if children is None:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children
                       if isinstance(child, (dict, list)))
    return deepest


@dataclass
class ModelRequest:
    requested: str
    kind: str
    """``json``, ``multipart``, ``form`` or ``query``."""
    content: IO[bytes] | None
    length: int
    data: dict[str, Any] | None = None
    raw: bytes | None = None
    model_part: multipart.Part | None = None

    def upstream(self, uri: bytes, rename: str = "", filters: Filters | None = None
                 ) -> tuple[bytes | IBodyProducer | None, bytes]:
        """``(body, uri)`` for the upstream: ``model`` renamed to ``rename`` (if set) and
        JSON filters applied; the client's bytes when nothing changes."""
        if self.kind == "json" and self.data is not None:
            changed = apply_filters(self.data, filters or Filters(), self.requested, rename)
            return (json.dumps(self.data).encode() if changed else self.raw), uri
        if self.kind == "multipart" and self.model_part is not None and rename:
            assert self.content is not None
            return multipart.splice(self.content, self.length, self.model_part,
                                    rename.encode()), uri
        if self.kind == "form" and self.raw is not None and rename:
            fields = [(k, rename if k == "model" else v)
                      for k, v in parse_qsl(self.raw.decode("latin-1"), keep_blank_values=True)]
            return urlencode(fields).encode(), uri
        if self.kind in ("query", "multipart") and rename:
            uri = rewrite_query_model(uri, rename)
        return self._unchanged_body(), uri

    def _unchanged_body(self) -> bytes | IBodyProducer | None:
        if self.raw is not None:
            return self.raw
        if self.content is None or self.length == 0:
            return None
        if self.length <= IN_MEMORY_LIMIT:
            self.content.seek(0)
            return self.content.read()
        return multipart.stream_file(self.content, self.length)


def rewrite_query_model(uri: bytes, model: str) -> bytes:
    path, _, query = uri.partition(b"?")
    fields = [(k, model if k == "model" else v)
              for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
    return path + b"?" + urlencode(fields).encode()


def _query_model(request: Request) -> str | None:
    values = request.args.get(b"model")
    if values and values[0].strip():
        model: str = values[0].decode("utf-8", "replace").strip()
        return model
    return None


def extract(request: Request) -> ModelRequest:
    """Find the requested model; ``BadRequest`` when there is none or the body is broken."""
    content = request.content
    length = body_length(content)
    content_type = header_text(request, b"content-type").lower()
    if request.method in (b"GET", b"HEAD") or length == 0:
        model = _query_model(request)
        if model is None:
            raise BadRequest("missing 'model' query parameter")
        return ModelRequest(model, "query", content, length)
    assert content is not None
    if content_type.startswith("multipart/form-data"):
        return _extract_multipart(request, content, length)
    content.seek(0)
    head = content.read(64).lstrip()
    looks_json = head[:1] in (b"{", b"[")
    if "json" in content_type or (looks_json and not content_type.startswith(
            ("multipart/", "application/octet-stream", "audio/", "image/"))):
        content.seek(0)
        raw = content.read()
        data = parse_json(raw)
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object")
        model = data.get("model")
        if not isinstance(model, str) or not model.strip():
            raise BadRequest("missing or invalid 'model' key in request body")
        return ModelRequest(model.strip(), "json", content, length, data=data, raw=raw)
    if content_type.startswith("application/x-www-form-urlencoded") and length <= (
            IN_MEMORY_LIMIT):
        content.seek(0)
        raw = content.read()
        models = [v for k, v in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
                  if k == "model"]
        if len(models) > 1:
            raise BadRequest(_ambiguous(len(models)))
        if models and models[0].strip():
            return ModelRequest(models[0].strip(), "form", content, length, raw=raw)
    model = _query_model(request)
    if model is None:
        raise BadRequest("missing or invalid 'model' key in request body")
    return ModelRequest(model, "query", content, length)


def _ambiguous(count: int) -> str:
    return f"ambiguous model: the form has {count} 'model' fields"


def _extract_multipart(request: Request, content: IO[bytes], length: int) -> ModelRequest:
    boundary = multipart.boundary_of(header_text(request, b"content-type"))
    if boundary is None:
        raise BadRequest("multipart/form-data without a boundary")
    try:
        parts = multipart.scan(content, boundary)
        named_model = [p for p in parts if p.name == "model"]
        if len(named_model) > 1:
            # We would route by one and the model server might read another.
            raise BadRequest(_ambiguous(len(named_model)))
        model_part = next((p for p in named_model if p.filename is None), None)
        model = (multipart.field_value(content, model_part).strip()
                 if model_part is not None else "")
    except multipart.MalformedMultipart as e:
        raise BadRequest(f"error parsing multipart form: {e}") from e
    if not model:
        model = _query_model(request) or ""
        model_part = None
    if not model:
        raise BadRequest("missing or invalid 'model' parameter in form data")
    return ModelRequest(model, "multipart", content, length, model_part=model_part)
