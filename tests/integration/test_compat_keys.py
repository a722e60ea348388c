"""llama-swap HEAD keys over HTTP: capabilities in /v1/models, upstream.ignorePaths,
compat.ignoreWebsockets and websocket upgrades through /upstream/<model>/."""

from __future__ import annotations

import pytest_twisted
from conftest import body_json, upstream_cmd


@pytest_twisted.ensureDeferred
async def test_capabilities_in_the_model_list(llamaswap) -> None:
    swapper = await llamaswap(f"""
includeAliasesInList: true
models:
  vis:
    cmd: {upstream_cmd("vis")}
    aliases: [eyes]
    metadata: {{context_length: 1, family: x}}
    capabilities: {{in: [text, image], out: [text], tools: true, context: 16384}}
  plain:
    cmd: {upstream_cmd("plain")}
""")
    listing = await body_json(await swapper.get("/v1/models"))
    by_id = {record["id"]: record for record in listing["data"]}
    vis = by_id["vis"]
    assert vis["capabilities"] == {"vision": True, "function_calling": True}
    assert vis["architecture"]["modality"] == "text+image->text"
    assert vis["supported_parameters"] == ["tools", "tool_choice"]
    assert vis["context_length"] == 16384 and vis["meta"]["n_ctx"] == 16384
    assert vis["meta"]["llamaswap"]["family"] == "x"
    assert "context_length" not in vis["meta"]["llamaswap"]  # the capabilities' value wins
    assert by_id["eyes"]["capabilities"] == vis["capabilities"]
    plain = by_id["plain"]
    assert not {"capabilities", "architecture", "context_length"} & set(plain)
