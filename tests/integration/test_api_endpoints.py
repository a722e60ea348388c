"""Every model endpoint through a real llamaswap to a real upstream (issue 3).

Model extraction from JSON, multipart, forms and the query string; prefix stripping;
multipart renaming streamed from the spool file; the request size limit; Anthropic's error
shape on Anthropic endpoints; filters.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest_twisted
import treq
import urllib3
from api_ports import own_port_model
from conftest import body_json

CONFIG = f"""
maxRequestSize: 4MB
models:
  alpha:
    {own_port_model("alpha")}
    aliases: [first]
  whisper:
    {own_port_model("whisper")}
    useModelName: whisper-large-v3
  filtered:
    {own_port_model("filtered")}
    filters:
      stripParams: "temperature, model, top_k"
      setParams:
        top_p: 0.5
        chat_template_kwargs.enable_thinking: false
      setParamsByID:
        "${{MODEL_ID}}:think":
          chat_template_kwargs.enable_thinking: true
"""


async def echo(swapper: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await swapper.post(path, {**body, "test_echo": True})
    assert response.code == 200, (path, await treq.text_content(response))
    return await body_json(response)


@pytest_twisted.ensureDeferred
async def test_json_endpoints_reach_the_model_with_prefixes_stripped(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    expected = {
        "/v1/responses": "/v1/responses",
        "/v1/messages": "/v1/messages",
        "/v1/messages/count_tokens": "/v1/messages/count_tokens",
        "/v1/audio/speech": "/v1/audio/speech",
        "/v1/images/generations": "/v1/images/generations",
        "/infill": "/infill",
        "/completion": "/completion",
        "/sdapi/v1/txt2img": "/sdapi/v1/txt2img",
        "/sdapi/v1/img2img": "/sdapi/v1/img2img",
        "/audioapi/v1/tasks/run": "/v1/tasks/run",
        "/v/chat/completions": "/chat/completions",
        "/v/responses": "/responses",
        "/v/messages/count_tokens": "/messages/count_tokens",
        "/v/embeddings?x=1": "/embeddings?x=1",
    }
    for path, upstream_path in expected.items():
        seen = await echo(swapper, path, {"model": "first"})
        assert seen["path"] == upstream_path, path
        assert json.loads(seen["body"])["model"] == "first"  # alias kept, as llama-swap


@pytest_twisted.ensureDeferred
async def test_get_endpoints_route_by_query_model(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    for path in ("/props", "/v1/audio/voices", "/sdapi/v1/loras"):
        response = await swapper.get(f"{path}?model=alpha&extra=1")
        assert response.code == 200, path
        seen = (await body_json(response))["received"]
        assert seen["path"] == f"{path}?model=alpha&extra=1"
        assert seen["method"] == "GET"
    missing = await swapper.get("/props")
    assert missing.code == 400
    assert "model" in (await body_json(missing))["error"]["message"]
    wrong_method = await swapper.post("/props", {"model": "alpha"})
    assert wrong_method.code == 405
    assert wrong_method.headers.getRawHeaders("allow") == ["GET, HEAD"]


@pytest_twisted.ensureDeferred
async def test_form_and_query_models_on_post(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    form = await swapper.post("/v1/tasks/run".join(["/audioapi", ""]), b"model=alpha&a=b",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.code == 200
    assert (await body_json(form))["received"]["path"] == "/v1/tasks/run"
    query = await swapper.post("/audioapi/v1/tasks/run?model=alpha", b"\x00binary",
                               headers={"Content-Type": "application/octet-stream"})
    assert query.code == 200
    seen = (await body_json(query))["received"]
    assert seen["path"] == "/v1/tasks/run?model=alpha" and seen["body_length"] == 7


def multipart_upload(fields: dict[str, Any]) -> tuple[bytes, str]:
    body, content_type = urllib3.encode_multipart_formdata(fields)
    return body, content_type


@pytest_twisted.ensureDeferred
async def test_multipart_upload_renamed_and_streamed(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    audio = os.urandom(3 * 1024 * 1024)  # spooled to disk by twisted.web, streamed from it
    body, content_type = multipart_upload({
        "file": ("speech.wav", audio, "audio/wav"), "model": "whisper", "language": "de"})
    response = await swapper.post("/v1/audio/transcriptions", body,
                                  headers={"Content-Type": content_type})
    assert response.code == 200, await treq.text_content(response)
    seen = (await body_json(response))["received"]
    assert seen["fields"] == {"model": "whisper-large-v3", "language": "de"}
    assert seen["files"]["file"]["sha256"] == hashlib.sha256(audio).hexdigest()
    assert seen["files"]["file"]["filename"] == "speech.wav"
    assert seen["body_length"] == len(body) + len("-large-v3")

    unchanged, content_type = multipart_upload({"model": "alpha", "image": ("a.png", b"PNG")})
    response = await swapper.post("/v1/images/edits", unchanged,
                                  headers={"Content-Type": content_type})
    seen = (await body_json(response))["received"]
    assert seen["fields"] == {"model": "alpha"} and seen["body_length"] == len(unchanged)


@pytest_twisted.ensureDeferred
async def test_bad_multipart_is_a_400(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    no_model, content_type = multipart_upload({"file": ("a.wav", b"RIFF")})
    response = await swapper.post("/v1/audio/transcriptions", no_model,
                                  headers={"Content-Type": content_type})
    assert response.code == 400
    assert "model" in (await body_json(response))["error"]["message"]
    truncated = await swapper.post("/v1/audio/transcriptions", b"--xyz\r\nnot closed",
                                   headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert truncated.code == 400


@pytest_twisted.ensureDeferred
async def test_oversized_request_is_413_in_the_endpoints_error_shape(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    big = {"model": "alpha", "messages": [{"role": "user", "content": "x" * 5_000_000}]}
    response = await swapper.post("/v1/chat/completions", big)
    assert response.code == 413
    assert (await body_json(response))["error"]["code"] == "request_too_large"
    response = await swapper.post("/v1/messages", big)
    assert response.code == 413
    assert (await body_json(response)) == {"type": "error", "error": {
        "type": "request_too_large",
        "message": "request body is larger than the maximum request size (4000000 bytes)"}}
    assert swapper.starts == {}  # nothing was started for them


@pytest_twisted.ensureDeferred
async def test_anthropic_endpoints_answer_errors_in_anthropic_shape(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    unknown = await swapper.post("/v1/messages", {"model": "nope", "messages": []})
    assert unknown.code == 404
    body = await body_json(unknown)
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "nope" in body["error"]["message"]
    broken = await swapper.post("/v1/messages/count_tokens", b"{not json")
    assert broken.code == 400
    assert (await body_json(broken))["error"]["type"] == "invalid_request_error"
    openai_style = await swapper.post("/v1/chat/completions", {"model": "nope"})
    assert (await body_json(openai_style))["error"]["code"] == "model_not_found"


@pytest_twisted.ensureDeferred
async def test_filters_strip_set_and_set_by_id_with_model_protected(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    request = {"model": "filtered", "temperature": 0.9, "top_k": 3, "keep": 1,
               "chat_template_kwargs": {"other": 1}}
    sent = json.loads((await echo(swapper, "/v1/chat/completions", request))["body"])
    assert sent == {"model": "filtered", "keep": 1, "top_p": 0.5, "test_echo": True,
                    "chat_template_kwargs": {"other": 1, "enable_thinking": False}}
    thinking = json.loads((await echo(swapper, "/v1/chat/completions",
                                      {**request, "model": "filtered:think"}))["body"])
    assert thinking["model"] == "filtered:think"
    assert thinking["chat_template_kwargs"]["enable_thinking"] is True
    assert swapper.starts == {"filtered": 1}  # the setParamsByID key is an alias


@pytest_twisted.ensureDeferred
async def test_untouched_json_is_forwarded_byte_for_byte(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    raw = b'{ "model" : "alpha",  "test_echo": true, "n": 1.0 }'
    response = await swapper.post("/v1/responses", raw)
    assert (await body_json(response))["body"] == raw.decode()
