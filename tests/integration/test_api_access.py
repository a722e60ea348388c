"""apiKeys and CORS through a real llamaswap."""

from __future__ import annotations

import base64
from typing import Any

import pytest_twisted
import treq
from api_ports import own_port_model
from conftest import body_json, upstream_cmd
from twisted.logger import globalLogPublisher

KEYS_CONFIG = f"""
apiKeys: [sk-one-4f1d, sk-two-9c2e]
models:
  alpha:
    {own_port_model("alpha")}
    upstreamHeaders:
      Authorization: Bearer upstream-secret
  beta:
    {own_port_model("beta")}
"""
SECRETS = ("sk-one-4f1d", "sk-two-9c2e", "wrong-key-77")


def chat(model: str = "beta") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()


@pytest_twisted.ensureDeferred
async def test_api_keys_guard_every_model_route_and_never_reach_the_logs(llamaswap) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        swapper = await llamaswap(KEYS_CONFIG)
        json_type = {"Content-Type": "application/json"}
        missing = await swapper.post("/v1/chat/completions", chat())
        assert missing.code == 401
        assert missing.headers.getRawHeaders("www-authenticate") == ['Basic realm="llamaswap"']
        assert (await body_json(missing))["error"]["type"] == "authentication_error"
        wrong = await swapper.post("/v1/chat/completions", chat(),
                                   headers={**json_type, "Authorization": "Bearer wrong-key-77"})
        assert wrong.code == 401
        anthropic = await swapper.post("/v1/messages", chat(),
                                       headers={**json_type, "x-api-key": "wrong-key-77"})
        assert anthropic.code == 401
        assert (await body_json(anthropic))["error"]["type"] == "authentication_error"
        for header in ({"Authorization": "Bearer sk-two-9c2e"}, {"x-api-key": "sk-one-4f1d"},
                       {"Authorization": basic("sk-one-4f1d")}):
            response = await swapper.post("/v1/chat/completions", chat(),
                                          headers={**json_type, **header})
            assert response.code == 200, header
            await treq.content(response)
        assert (await swapper.get("/v1/models")).code == 401
        assert (await swapper.get("/running")).code == 401
        assert (await swapper.get("/upstream/beta/health")).code == 401
        health = await swapper.get("/health")
        assert health.code == 200 and await treq.text_content(health) == "OK"
        listed = await swapper.get("/v1/models", headers={"x-api-key": "sk-one-4f1d"})
        assert listed.code == 200
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = "\n".join(repr(event) for event in events)
    assert "POST" in logged  # the access log was captured ...
    for secret in SECRETS:
        assert secret not in logged  # ... and holds no key


@pytest_twisted.ensureDeferred
async def test_client_keys_stay_here_and_model_headers_go_upstream(llamaswap) -> None:
    swapper = await llamaswap(KEYS_CONFIG)
    key = {"Authorization": "Bearer sk-one-4f1d", "x-api-key": "sk-two-9c2e"}
    beta = await body_json(await swapper.get("/upstream/beta/echo-headers", headers=key))
    assert "authorization" not in beta and "x-api-key" not in beta
    alpha = await body_json(await swapper.get("/upstream/alpha/echo-headers", headers=key))
    assert alpha["authorization"] == "Bearer upstream-secret" and "x-api-key" not in alpha
    echoed = await body_json(await swapper.post(
        "/v1/chat/completions", {**chat("alpha"), "test_echo": True},
        headers={"Content-Type": "application/json", **key}))
    assert echoed["headers"]["authorization"] == "Bearer upstream-secret"


@pytest_twisted.ensureDeferred
async def test_without_api_keys_the_clients_authorization_passes_through(llamaswap) -> None:
    swapper = await llamaswap(f"models:\n  beta:\n    cmd: {upstream_cmd('beta')}\n")
    seen = await body_json(await swapper.get("/upstream/beta/echo-headers",
                                             headers={"Authorization": "Bearer for-vllm"}))
    assert seen["authorization"] == "Bearer for-vllm"


@pytest_twisted.ensureDeferred
async def test_preflight_on_any_path_is_open_and_sanitised(llamaswap) -> None:
    swapper = await llamaswap(KEYS_CONFIG)
    for path in ("/v1/chat/completions", "/no/such/path", "/upstream/beta/x"):
        response = await swapper.client.request(
            "OPTIONS", swapper.url + path,
            headers={"Origin": "http://ui.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "X-Custom, Bad Header, content-type"})
        assert response.code == 204, path
        headers = response.headers
        assert headers.getRawHeaders("access-control-allow-origin") == ["*"]
        assert headers.getRawHeaders("access-control-allow-methods") == [
            "GET, POST, PUT, PATCH, DELETE, OPTIONS"]
        assert headers.getRawHeaders("access-control-allow-headers") == [
            "X-Custom, content-type"]
        assert headers.getRawHeaders("access-control-max-age") == ["86400"]
    default = await swapper.client.request("OPTIONS", swapper.url + "/v1/models")
    assert default.headers.getRawHeaders("access-control-allow-headers") == [
        "Content-Type, Authorization, Accept, X-Requested-With"]
    assert swapper.starts == {}
    listed = await swapper.get("/v1/models", headers={"Origin": "http://ui.example",
                                                      "x-api-key": "sk-one-4f1d"})
    assert listed.headers.getRawHeaders("access-control-allow-origin") == ["http://ui.example"]
