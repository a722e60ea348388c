"""The UI's files are open, the API behind them is not, and no path below ``ui/`` reaches
the API without a key."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from tests.ui.conftest import PREFIX, Server


def get(server: Server, path: str) -> tuple[int, bytes]:
    parts = urlsplit(server.origin)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request("GET", path)  # sent as written: no client-side normalisation
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_ui_files_are_open_and_the_api_is_not(server: Server) -> None:
    status, body = get(server, PREFIX + "/ui/")
    assert status == 200 and b'<script type="module" src="js/main.js">' in body
    assert get(server, PREFIX + "/ui/js/views/activity.js")[0] == 200
    assert get(server, PREFIX + "/running")[0] == 401
    for sneaky in ("/ui/../running", "/ui/%2e%2e/running", "/ui/js/../../running",
                   "/ui/..%2frunning"):
        status, body = get(server, PREFIX + sneaky)
        assert status in (401, 403, 404), (sneaky, status)
        assert b"running" not in body or status != 200


def test_llama_swap_style_page_paths_redirect_to_the_ui_pages(server: Server) -> None:
    parts = urlsplit(server.origin)
    for path, location in (("/ui/models", "./#/models"),
                           ("/ui/models/org/name", "../../#/models/org/name"),
                           ("/ui/performance", "./#/performance")):
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                                timeout=10)
        try:
            connection.request("GET", PREFIX + path)
            response = connection.getresponse()
            response.read()
            assert (response.status, response.getheader("location")) == (302, location)
        finally:
            connection.close()
    assert get(server, PREFIX + "/ui/js/nothing.js")[0] == 404
