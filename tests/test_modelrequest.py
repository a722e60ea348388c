"""``web/modelrequest.py``: JSON depth and ambiguous model fields are refused (400)."""

from __future__ import annotations

import json
from io import BytesIO

import pytest

from llamaswap.web.modelrequest import (
    MAX_JSON_DEPTH,
    BadRequest,
    ModelRequest,
    extract,
    json_depth,
    parse_json,
)


@pytest.mark.parametrize(("value", "depth"), [
    (1, 0), ([], 1), ({}, 1), ([[1], {"a": [2]}], 3), ({"a": {"b": {"c": []}}}, 4),
])
def test_json_depth(value: object, depth: int) -> None:
    assert json_depth(value) == depth


def test_depth_up_to_the_bound_is_parsed() -> None:
    raw = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert json_depth(parse_json(raw)) == MAX_JSON_DEPTH


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 950, 10_000, 1_000_000])
def test_deeper_is_bad_request_whatever_python_can_parse(depth: int) -> None:
    raw = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(BadRequest, match="deeper than"):
        parse_json(raw)


def test_many_brackets_side_by_side_are_not_deep() -> None:
    raw = json.dumps({"model": "m", "x": [[]] * 5000}).encode()
    assert parse_json(raw)["model"] == "m"


def test_invalid_json_is_still_reported_as_such() -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_json(b"{")


class _Request:
    """What ``extract`` reads of a twisted.web request."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.content = BytesIO(body)
        self.method = b"POST"
        self.args: dict[bytes, list[bytes]] = {}
        self._type = content_type

    def getHeader(self, name: bytes) -> bytes | None:
        return self._type.encode() if name == b"content-type" else None


def _extract(body: bytes, content_type: str) -> ModelRequest:
    return extract(_Request(body, content_type))  # type: ignore[arg-type]


def test_two_multipart_model_fields_are_ambiguous() -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\na\r\n'
            b'--b\r\nContent-Disposition: form-data; name="model"; filename="m"\r\n\r\nb\r\n'
            b"--b--\r\n")
    with pytest.raises(BadRequest, match="ambiguous model: the form has 2 'model' fields"):
        _extract(body, "multipart/form-data; boundary=b")


def test_one_multipart_model_field_is_read() -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n a \r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nz\r\n'
            b"--b--\r\n")
    assert _extract(body, "multipart/form-data; boundary=b").requested == "a"


def test_two_urlencoded_model_fields_are_ambiguous() -> None:
    with pytest.raises(BadRequest, match="ambiguous model"):
        _extract(b"model=a&x=1&model=a", "application/x-www-form-urlencoded")
