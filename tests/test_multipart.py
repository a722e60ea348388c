"""multipart/form-data scanning and splicing without reading uploads whole."""

from __future__ import annotations

import email.parser
import io

import pytest
import urllib3

from llamaswap.web import multipart


def encode(fields: dict) -> tuple[bytes, bytes]:  # type: ignore[type-arg]
    body, content_type = urllib3.encode_multipart_formdata(fields)
    boundary = multipart.boundary_of(content_type)
    assert boundary is not None
    return body, boundary


def parse(body: bytes, boundary: bytes) -> dict[str, bytes]:
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n" + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.get_payload()}


def test_boundary_quoted_or_not() -> None:
    assert multipart.boundary_of('multipart/form-data; boundary="a b"') == b"a b"
    assert multipart.boundary_of("multipart/form-data; charset=x; boundary=xyz") == b"xyz"
    assert multipart.boundary_of("multipart/form-data") is None


def test_scan_finds_parts_across_chunk_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "CHUNK", 7)  # delimiters straddle every read
    data = b"\r\n--" + bytes(range(256)) * 4  # binary with a near-delimiter inside
    body, boundary = encode({"file": ("a.bin", data), "model": "m1", "x": "y"})
    parts = multipart.scan(io.BytesIO(body), boundary)
    assert [(p.name, p.filename) for p in parts] == [("file", "a.bin"), ("model", None),
                                                      ("x", None)]
    assert body[parts[0].start:parts[0].end] == data
    assert multipart.field_value(io.BytesIO(body), parts[1]) == "m1"


def test_malformed_bodies_are_reported() -> None:
    with pytest.raises(multipart.MalformedMultipart):
        multipart.scan(io.BytesIO(b"no boundary here"), b"xyz")
    with pytest.raises(multipart.MalformedMultipart):
        multipart.scan(io.BytesIO(b"--xyz\r\nContent-Disposition: form-data\r\n\r\nv\r\n"),
                       b"xyz")  # never closed


def test_splice_streams_the_file_with_the_new_value() -> None:
    data = bytes(range(256)) * 2000
    body, boundary = encode({"model": "short", "file": ("a.wav", data)})
    spool = io.BytesIO(body)
    model = next(p for p in multipart.scan(spool, boundary) if p.name == "model")
    producer = multipart.splice(spool, len(body), model, b"a-much-longer-model-name")
    assert producer.length == len(body) + len("a-much-longer-model-name") - len("short")
    reads: list[int] = []
    reader = producer._inputFile
    out = b""
    while chunk := reader.read(multipart.CHUNK):
        reads.append(len(chunk))
        out += chunk
    assert max(reads) <= multipart.CHUNK  # never more than a chunk in memory at once
    assert parse(out, boundary) == {"model": b"a-much-longer-model-name", "file": data}
    assert len(out) == producer.length
