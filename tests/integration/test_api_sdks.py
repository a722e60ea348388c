"""The official ``openai`` and ``anthropic`` SDKs against a real llamaswap.

The SDKs are synchronous, so each call runs in a thread while the reactor serves it. What
the upstream received is echoed back (``received``), so tests check the request too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import openai
import pytest
import pytest_twisted
from api_ports import own_port_model
from conftest import wait_for
from twisted.internet.threads import deferToThread

T = TypeVar("T")
KEY = "sdk-key-3b7"
CONFIG = f"""
apiKeys: [{KEY}]
models:
  chat:
    {own_port_model("chat")}
    concurrencyLimit: 1
  whisper:
    {own_port_model("whisper")}
    useModelName: whisper-large-v3
"""


async def in_thread(call: Callable[[], T]) -> T:
    return await deferToThread(call)


def openai_client(swapper: Any, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=swapper.url + "/v1", api_key=key, max_retries=0)


def anthropic_client(swapper: Any, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=swapper.url, api_key=key, max_retries=0)


MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest_twisted.ensureDeferred
async def test_openai_chat_completions_responses_embeddings(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    client = openai_client(swapper)
    chat = await in_thread(lambda: client.chat.completions.create(
        model="chat", messages=MESSAGES))  # type: ignore[arg-type]
    assert chat.choices[0].message.content == "You said: hello there"

    def stream_chat() -> str:
        chunks = client.chat.completions.create(model="chat", messages=MESSAGES,  # type: ignore
                                                stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert await in_thread(stream_chat) == "You said: hello there"
    completion = await in_thread(lambda: client.completions.create(model="chat", prompt="abc"))
    assert completion.choices[0].text

    response = await in_thread(lambda: client.responses.create(model="chat", input="hi you"))
    assert response.output_text == "You said: hi you"

    def stream_response() -> list[str]:
        with client.responses.stream(model="chat", input="one two") as events:
            return [e.type for e in events]

    types = await in_thread(stream_response)
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 4

    embedding = await in_thread(lambda: client.embeddings.create(model="chat", input="x"))
    assert len(embedding.data[0].embedding) == 16


@pytest_twisted.ensureDeferred
async def test_openai_uploads_transcription_and_image_edit(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    client = openai_client(swapper)
    audio = bytes(range(256)) * 800  # 200 kB: spooled to disk by llamaswap
    transcription = await in_thread(lambda: client.audio.transcriptions.create(
        model="whisper", file=("talk.wav", audio, "audio/wav")))
    assert transcription.text == f"{len(audio)} bytes of audio"
    received = transcription.received  # type: ignore[attr-defined]
    assert received["fields"]["model"] == "whisper-large-v3"  # useModelName, multipart
    assert received["files"]["file"]["sha256"] == hashlib.sha256(audio).hexdigest()

    image = b"\x89PNG\r\n\x1a\n" + bytes(1000)
    edited = await in_thread(lambda: client.images.edit(
        model="chat", image=("in.png", image, "image/png"), prompt="add a hat"))
    files = json.loads(base64.b64decode(edited.data[0].b64_json or ""))
    assert files["image"]["size"] == len(image) and files["image"]["filename"] == "in.png"

    speech = await in_thread(lambda: client.audio.speech.create(
        model="chat", voice="alloy", input="say this"))
    assert speech.content == b"ID3say this"
    generated = await in_thread(lambda: client.images.generate(model="chat", prompt="a cat"))
    assert generated.data and generated.data[0].b64_json is not None


@pytest_twisted.ensureDeferred
async def test_openai_typed_errors(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    with pytest.raises(openai.AuthenticationError) as denied:
        await in_thread(lambda: openai_client(swapper, "wrong").models.list())
    assert denied.value.status_code == 401
    with pytest.raises(openai.NotFoundError) as missing:
        await in_thread(lambda: openai_client(swapper).chat.completions.create(
            model="nope", messages=MESSAGES))  # type: ignore[arg-type]
    assert "nope" in str(missing.value)
    client = openai_client(swapper)
    slow = deferToThread(lambda: client.chat.completions.create(
        model="chat", messages=MESSAGES, extra_body={"test_delay": 2}))  # type: ignore
    await wait_for(lambda: swapper.service.router.in_flight("chat") == 1)
    with pytest.raises(openai.RateLimitError) as limited:
        await in_thread(lambda: client.chat.completions.create(
            model="chat", messages=MESSAGES))  # type: ignore[arg-type]
    assert limited.value.status_code == 429
    assert (await slow).choices[0].message.content


@pytest_twisted.ensureDeferred
async def test_anthropic_messages_streaming_and_count_tokens(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    client = anthropic_client(swapper)
    message = await in_thread(lambda: client.messages.create(
        model="chat", max_tokens=64, messages=MESSAGES))  # type: ignore[arg-type]
    assert message.content[0].text == "You said: hello there"  # type: ignore[union-attr]
    assert message.received["headers"].get("x-api-key") is None  # type: ignore[attr-defined]

    def stream() -> str:
        with client.messages.stream(model="chat", max_tokens=64,
                                    messages=MESSAGES) as events:  # type: ignore[arg-type]
            return "".join(events.text_stream)

    assert (await in_thread(stream)).strip() == "You said: hello there"
    counted = await in_thread(lambda: client.messages.count_tokens(
        model="chat", messages=MESSAGES))  # type: ignore[arg-type]
    assert counted.input_tokens > 0


@pytest_twisted.ensureDeferred
async def test_anthropic_typed_errors(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        await in_thread(lambda: anthropic_client(swapper, "wrong").messages.create(
            model="chat", max_tokens=8, messages=MESSAGES))  # type: ignore[arg-type]
    assert denied.value.status_code == 401
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore
    with pytest.raises(anthropic.NotFoundError) as missing:
        await in_thread(lambda: anthropic_client(swapper).messages.create(
            model="nope", max_tokens=8, messages=MESSAGES))  # type: ignore[arg-type]
    assert "nope" in missing.value.message
    client = anthropic_client(swapper)
    slow = deferToThread(lambda: client.messages.create(
        model="chat", max_tokens=8, messages=MESSAGES,  # type: ignore[arg-type]
        extra_body={"test_delay": 2}))
    await wait_for(lambda: swapper.service.router.in_flight("chat") == 1)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await in_thread(lambda: client.messages.create(
            model="chat", max_tokens=8, messages=MESSAGES))  # type: ignore[arg-type]
    assert limited.value.status_code == 429
    assert (await slow).content
