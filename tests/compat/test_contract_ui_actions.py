"""What llama-swap's own web UI does against llamaswap, and what its Activity page then shows.

Its Models page loads a model with ``GET /upstream/<model>/?_=<time>`` and counts anything but
a 2xx as a failed load; its "open" link shows the model server's own page through
``/upstream``. llama-swap keeps only POSTs in activity, and through ``/upstream`` only POSTs to
a model endpoint (Go: ``TestServer_HandleUpstream_MetricsSkipsGET`` and the metrics
middleware's ``isMetricsRecordPath``), so neither action adds a row there."""

from __future__ import annotations

import pytest
import pytest_twisted
import treq

from llamaswap.compat.activity import kept_in_activity
from tests.compat import llama_swap_types as T
from tests.integration.conftest import body_json, upstream_cmd, wait_for

CONFIG = f"""
models:
  m:
    cmd: {upstream_cmd("m")}
"""
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("method", "path", "kept"), [
    ("POST", "/v1/chat/completions", True),
    ("POST", "/v1/embeddings", True),
    ("POST", "/upstream/m/v1/chat/completions", True),
    ("POST", "/upstream/org/model/v1/messages", True),
    ("POST", "/upstream/m/completion", True),
    ("GET", "/upstream/m/", False),
    ("GET", "/upstream/m/?_=1796461371401", False),
    ("GET", "/upstream/m/assets/index.js", False),
    ("HEAD", "/upstream/m/", False),
    ("POST", "/upstream/m/", False),
    ("POST", "/upstream/m/slots", False),
    ("PUT", "/upstream/m/v1/chat/completions", False),
    ("GET", "/props", False),
    ("GET", "/v1/audio/voices", False),
])
def test_only_posts_to_model_endpoints_are_kept(method: str, path: str, kept: bool) -> None:
    assert kept_in_activity(method, path) is kept


@pytest_twisted.ensureDeferred
async def test_loading_and_browsing_a_model_add_no_activity_rows(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    observability = swapper.service.observability
    announced: list[dict[str, str]] = []
    unsubscribe = observability.bus.subscribe(announced.append)

    load = await swapper.get("/upstream/m/?_=1796461371401")  # the Models page's load button
    assert load.code == 200 and b"<h1>m</h1>" in await treq.content(load)
    assert (await swapper.get("/upstream/m/echo")).code == 200
    assert (await swapper.post("/upstream/m/echo", b"{}")).code == 200
    via_upstream = await swapper.post("/upstream/m/v1/chat/completions", CHAT)
    assert via_upstream.code == 200
    await treq.content(via_upstream)
    direct = await swapper.post("/v1/chat/completions", CHAT)
    assert direct.code == 200
    await treq.content(direct)
    await wait_for(lambda: sum(e["type"] == "activity" for e in announced) >= 2)
    unsubscribe()

    page = await body_json(await swapper.get("/api/metrics/activity?order=asc"))
    T.assert_decodes(page, T.ACTIVITY_PAGE)
    assert [(row["req_path"], row["resp_status_code"]) for row in page["data"]] == [
        ("/v1/chat/completions", 200), ("/v1/chat/completions", 200)]  # the path m saw
    assert sum(e["type"] == "activity" for e in announced) == 2
    stats = await body_json(await swapper.get("/api/metrics/stats"))
    assert stats["total_requests"] == 2
