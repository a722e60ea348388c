"""``GET /api/queue`` over loopback: a request waiting behind a busy model is listed."""

from __future__ import annotations

import pytest_twisted
from conftest import body_json, upstream_cmd, wait_for
from twisted.web.client import ResponseNeverReceived

CONFIG = f"""
apiKeys:
  - admin-key
  - {{key: infer-key, scope: inference}}
  - {{key: ops-key, scope: management}}
models:
  alpha:
    cmd: {upstream_cmd("alpha")}
  beta:
    cmd: {upstream_cmd("beta")}
"""

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}


@pytest_twisted.ensureDeferred
async def test_a_request_waiting_for_a_swap_is_listed_until_it_is_served(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    router = swapper.service.router
    empty = await swapper.get("/api/queue", headers=bearer("ops-key"))
    assert empty.code == 200 and await body_json(empty) == {"requests": []}

    # alpha is busy answering (slowly) while a request for beta needs it swapped out.
    busy = swapper.post("/v1/chat/completions", {"model": "alpha", "test_delay": 120, **CHAT},
                        headers=bearer("admin-key"))
    busy.addErrback(lambda f: f.trap(ResponseNeverReceived))  # we left
    await wait_for(lambda: router.in_flight("alpha") == 1, timeout=30)
    waiting = swapper.post("/v1/chat/completions", {"model": "beta", **CHAT},
                           headers=bearer("admin-key"))
    await wait_for(lambda: router.queued() == 1, timeout=10)

    response = await swapper.get("/api/queue", headers=bearer("ops-key"))
    assert response.code == 200
    (row,) = (await body_json(response))["requests"]
    assert row["model"] == "beta" and row["req_path"] == "/v1/chat/completions"
    assert row["position"] == 1  # queued: the swap waits for alpha's request to finish
    assert isinstance(row["id"], int) and row["waited_ms"] >= 0
    assert row["eta_ms"] == 12_000  # beta never loaded: a tenth of healthCheckTimeout (120 s)
    later = await body_json(await swapper.get("/api/queue", headers=bearer("admin-key")))
    assert later["requests"][0]["waited_ms"] >= row["waited_ms"]  # the wait goes on

    busy.cancel()  # alpha's client leaves: the swap to beta goes ahead
    served = await waiting
    assert served.code == 200 and (await body_json(served))["model"] == "beta"
    after = await body_json(await swapper.get("/api/queue", headers=bearer("ops-key")))
    assert after == {"requests": []}


@pytest_twisted.ensureDeferred
async def test_the_queue_is_for_management_keys(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    refused = await swapper.get("/api/queue", headers=bearer("infer-key"))
    assert refused.code == 403
    assert (await body_json(refused))["error"]["code"] == "forbidden"
    assert (await swapper.get("/api/queue")).code == 401
    assert (await swapper.get("/api/queue", headers=bearer("ops-key"))).code == 200
