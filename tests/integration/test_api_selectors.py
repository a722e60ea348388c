"""Profiles and selectors at run time, through a real llamaswap."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from api_ports import own_port_model
from conftest import body_json, wait_for
from twisted.internet.defer import gatherResults

CONFIG = f"""
models:
  real:
    {own_port_model("real")}
    filters:
      setParamsByID:
        variant: {{thinking: true}}
  small:
    {own_port_model("small")}
  big:
    {own_port_model("big")}
groups:
  pair: {{swap: false, members: [small, big]}}
selectors:
  spread:
    strategy: spillover
    targets: [small, big]
    description: fills small first
  warmest:
    strategy: warm
    targets: [big, small]
profiles:
  coding:
    description: coding setup
    pins: {{public: variant, off: "", fast: spread}}
"""


async def put_profile(swapper: Any, name: Any) -> Any:
    response = await swapper.client.put(swapper.url + "/api/profiles/active",
                                        data=json.dumps({"name": name}).encode())
    return response.code, await body_json(response)


@pytest_twisted.ensureDeferred
async def test_profiles_pin_names_at_run_time(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    listing = await body_json(await swapper.get("/api/profiles"))
    assert listing == {"active": None, "profiles": [{
        "id": "coding", "description": "coding setup",
        "pins": {"public": "variant", "off": "", "fast": "spread"}}]}
    assert (await swapper.chat("public")).code == 404  # not pinned yet
    assert await put_profile(swapper, "missing") == (404, {
        "src": "llamaswap", "error": {"message": 'profile "missing" not found',
                                      "type": "invalid_request_error", "param": None,
                                      "code": "not_found"}})
    assert await put_profile(swapper, "coding") == (200, {"active": "coding"})

    seen = await body_json(await swapper.chat("public", test_echo=True))
    sent = json.loads(seen["body"])
    # pinned to the setParamsByID alias "variant": its params apply, the body says variant
    assert sent["model"] == "variant" and sent["thinking"] is True
    assert swapper.starts == {"real": 1}
    disabled = await swapper.chat("off")
    assert disabled.code == 404
    upstream = await swapper.get("/upstream/public/echo")
    assert (await body_json(upstream))["path"] == "/echo"

    ids = {r["id"]: r for r in (await body_json(await swapper.get("/v1/models")))["data"]}
    assert ids["public"]["meta"]["llamaswap"]["type"] == "profile"
    assert "off" not in ids
    assert ids["fast"]["meta"]["llamaswap"] == {"type": "profile", "target": "spread"}
    assert await put_profile(swapper, None) == (200, {"active": None})
    assert (await swapper.chat("public")).code == 404
    bad = await swapper.client.put(swapper.url + "/api/profiles/active", data=b"{}")
    assert bad.code == 400


@pytest_twisted.ensureDeferred
async def test_spillover_sends_concurrent_requests_to_different_targets(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    first = swapper.chat("spread", test_delay=1.0)
    await wait_for(lambda: swapper.starts.get("small") == 1)
    second = swapper.chat("spread", test_delay=1.0)
    answers = await gatherResults([first, second])
    models = sorted([(await body_json(a))["model"] for a in answers])
    assert models == ["big", "small"]
    listed = {r["id"]: r for r in (await body_json(await swapper.get("/v1/models")))["data"]}
    assert listed["spread"]["meta"]["llamaswap"] == {
        "type": "selector", "strategy": "spillover", "targets": ["small", "big"],
        "spillover": 1}
    assert listed["spread"]["status"] == {"value": "loaded"}
    assert listed["spread"]["description"] == "fills small first"


@pytest_twisted.ensureDeferred
async def test_warm_picks_the_running_target(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    assert (await body_json(await swapper.chat("small")))["model"] == "small"
    echoed = await body_json(await swapper.chat("warmest", test_echo=True))
    assert json.loads(echoed["body"])["model"] == "small"  # big is cold: no swap needed
    assert swapper.starts == {"small": 1}
