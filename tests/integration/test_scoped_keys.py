"""Scoped API keys: inference vs. management, and the models a key may use."""

from __future__ import annotations

import pytest_twisted
from conftest import body_json, upstream_cmd

CONFIG = f"""
apiKeys:
  - admin-key
  - {{key: infer-a, scope: inference, models: [alpha]}}
  - {{key: ops-key, scope: management}}
models:
  alpha:
    cmd: {upstream_cmd("alpha")}
    aliases: [first]
  beta:
    cmd: {upstream_cmd("beta")}
"""


def bearer(key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest_twisted.ensureDeferred
async def test_inference_key_limited_to_its_models(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    ok = await swapper.post("/v1/chat/completions", {"model": "first", **CHAT},
                            headers=bearer("infer-a"))
    assert ok.code == 200  # an alias of an allowed model is that model
    refused = await swapper.post("/v1/chat/completions", {"model": "beta", **CHAT},
                                 headers=bearer("infer-a"))
    assert refused.code == 403
    assert (await body_json(refused))["error"]["code"] == "forbidden"
    assert swapper.state("beta").value == "stopped"  # refused before anything started
    listed = await swapper.get("/v1/models", headers=bearer("infer-a"))
    assert listed.code == 200
    for path in ("/api/models/unload", "/api/config/reload"):
        response = await swapper.post(path, b"", headers=bearer("infer-a"))
        assert response.code == 403, path
    assert (await swapper.get("/running", headers=bearer("infer-a"))).code == 403


@pytest_twisted.ensureDeferred
async def test_management_key_cannot_run_models_and_unscoped_keys_can_do_all(
        llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    chat = await swapper.post("/v1/chat/completions", {"model": "alpha", **CHAT},
                              headers=bearer("ops-key"))
    assert chat.code == 403
    assert (await swapper.get("/running", headers=bearer("ops-key"))).code == 200
    assert (await swapper.post("/v1/chat/completions", {"model": "beta", **CHAT},
                               headers=bearer("admin-key"))).code == 200
    assert (await swapper.get("/unload", headers=bearer("admin-key"))).code == 200
    assert (await swapper.get("/running", headers=bearer("wrong"))).code == 401
