"""Property tests (hypothesis): whatever a client or a config file contains, llamaswap answers
in its own error shape or loads/refuses cleanly. Never a traceback, a 500 of its own, a hang.

HTTP requests go byte for byte through the real ``Site`` and resource tree of a real
``LlamaSwapService`` on an in-memory transport with a ``Clock``; its router is replaced by a
stub that records which model each request reached and refuses it with 503, so no process is
ever started. Every step is synchronous, so a request that gets no answer at once is stuck:
"no hang" is asserted as "answered". Logged tracebacks fail the test (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import string
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, unquote

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from llamaswap.config import Config, ConfigError, parse_config
from llamaswap.router import WaitFailed
from llamaswap.service import LlamaSwapService

# Each example takes milliseconds; the deadline is generous for a busy shared 2-core machine.
# LLAMASWAP_PROPERTY_EXAMPLES=2000 explores further (about a minute).
FAST = settings(max_examples=int(os.environ.get("LLAMASWAP_PROPERTY_EXAMPLES", "150")),
                deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MODELS = ("alpha", "org/beta", "gamma:q4")
CONFIG_TEXT = """
maxRequestSize: 64KB
models:
  alpha:
    cmd: server --port ${PORT}
    aliases: [first]
  org/beta:
    cmd: server --port ${PORT}
    useModelName: beta-upstream
    filters: {stripParams: "temperature", setParams: {top_p: 0.5}}
  gamma:q4:
    cmd: server --port ${PORT}
"""
STUB_CODE = "stub_router_refused"
STUB_MESSAGE = "stub-router-refused-it"

ENDPOINTS = [
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
    "/v1/messages", "/v1/messages/count_tokens", "/v1/rerank", "/infill", "/completion",
    "/v1/audio/transcriptions", "/v1/audio/speech", "/v1/images/edits", "/v1/audio/voices",
    "/props", "/sdapi/v1/txt2img", "/v/chat/completions", "/audioapi/v1/tasks/run",
    "/v1/models", "/running", "/health", "/upstream/alpha/x", "/upstream/org/beta/",
    "/api/profiles", "/api/models/unload/nothing", "/nonexistent", "/",
]
JSON_ENDPOINTS = ENDPOINTS[:9]


class Server:
    """The real ``Site`` of a service whose router refuses everything it is asked for."""

    def __init__(self) -> None:
        self.service = LlamaSwapService(parse_config(CONFIG_TEXT, "props.yaml"), Clock())
        self.reached: list[str] = []
        self.service.router.enqueue = self._enqueue  # type: ignore[method-assign]
        self.site = self.service.site()

    def _enqueue(self, model: str, **labels: Any) -> Any:
        self.reached.append(model)
        return SimpleNamespace(model=model, deferred=fail(WaitFailed(STUB_MESSAGE, code=STUB_CODE)))

    def exchange(self, data: bytes) -> tuple[int | None, bytes]:
        """Feed ``data`` to a fresh connection: the status (None if no answer yet) and reply."""
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        reply = transport.value()
        channel.connectionLost(None)
        if not reply.startswith(b"HTTP/1."):
            return None, reply
        return int(reply.split(b" ", 2)[1]), reply


SERVER = Server()


def http_request(method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: llamaswap.test", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_no_500_of_ours(status: int | None, reply: bytes) -> None:
    assert status is not None, reply[:200]
    assert status != 500 and status < 600, reply[:500]
    assert b"Traceback" not in reply


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
model_names = st.sampled_from([*MODELS, "first", "ALPHA", "alpha ", ""]) | st.text(max_size=30)
content_types = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=XyZ",
    "multipart/form-data", "application/octet-stream", "", "application/json; charset=bogus",
])


@FAST
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_on_the_wire_never_cause_a_500(data: bytes) -> None:
    status, reply = SERVER.exchange(data)
    if status is not None:  # an incomplete request just waits (the site's deadlines end it)
        assert_no_500_of_ours(status, reply)


@FAST
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       endpoint=st.sampled_from(ENDPOINTS), content_type=content_types,
       body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
       query=st.text(max_size=20))
def test_any_method_path_type_and_body_is_answered_without_a_500(
        method: str, endpoint: str, content_type: str, body: bytes, query: str) -> None:
    target = endpoint + ("?" + quote(query, safe="=&") if query else "")
    headers = {"Content-Type": content_type} if content_type else {}
    status, reply = SERVER.exchange(http_request(method, target, headers, body))
    assert_no_500_of_ours(status, reply)


@FAST
@given(endpoint=st.sampled_from(JSON_ENDPOINTS), model=model_names,
       extra=st.dictionaries(st.text(max_size=8).filter(lambda k: k != "model"), json_values,
                             max_size=4),
       content_type=st.sampled_from(["application/json", "", "text/plain"]))
def test_json_model_extraction(endpoint: str, model: str, extra: dict[str, Any],
                               content_type: str) -> None:
    """A JSON object's ``model`` reaches the router exactly when it names a configured model
    or alias (surrounding whitespace ignored); anything else is a 4xx in our envelope before
    any model is considered."""
    SERVER.reached.clear()
    body = json.dumps({**extra, "model": model}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    status, reply = SERVER.exchange(http_request("POST", endpoint, headers, body))
    assert_no_500_of_ours(status, reply)
    known = SERVER.service.config.resolve(model.strip())  # surrounding blanks are ignored
    if known is not None:
        assert SERVER.reached == [known]
        assert status == 503 and STUB_MESSAGE.encode() in reply  # either API shape
    else:
        assert SERVER.reached == []
        assert status is not None and 400 <= status < 500


@FAST
@given(model=model_names, filename=st.text(max_size=20), payload=st.binary(max_size=200),
       field=st.sampled_from(["model", "MODEL", "file", "model[]", "prompt"]))
def test_multipart_model_extraction(model: str, filename: str, payload: bytes,
                                    field: str) -> None:
    SERVER.reached.clear()
    safe_name = filename.replace('"', "").replace("\r", "").replace("\n", "")
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"" + field.encode() + b"\"\r\n\r\n"
            + model.encode() + b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"" + safe_name.encode() + b"\"\r\n\r\n" + payload + b"\r\n--XyZ--\r\n")
    status, reply = SERVER.exchange(http_request(
        "POST", "/v1/audio/transcriptions", {"Content-Type": "multipart/form-data; boundary=XyZ"},
        body))
    assert_no_500_of_ours(status, reply)
    assert all(name in SERVER.service.config.models for name in SERVER.reached)
    if SERVER.reached:
        assert status == 503


path_segments = st.lists(
    st.sampled_from(["alpha", "org", "beta", "gamma:q4", "..", ".", "", "%2F", "%0d%0a", "@x",
                     "evil.example"]) | st.text(string.printable, max_size=6).map(
        lambda s: quote(s, safe="")),
    min_size=0, max_size=6)


@FAST
@given(segments=path_segments, method=st.sampled_from(["GET", "POST", "DELETE"]))
def test_upstream_paths_only_ever_reach_a_configured_model(segments: list[str],
                                                             method: str) -> None:
    SERVER.reached.clear()
    target = "/upstream/" + "/".join(segments)
    status, reply = SERVER.exchange(http_request(method, target, {}, b""))
    assert_no_500_of_ours(status, reply)
    assert all(model in MODELS for model in SERVER.reached)
    if SERVER.reached:  # it named a model: that model is a prefix of the path
        assert status == 503
        assert unquote(target).startswith("/upstream/" + SERVER.reached[0])


# -- config loading and macros -------------------------------------------------------------

KEYS = ["models", "groups", "macros", "healthCheckTimeout", "startPort", "apiKeys", "ttl",
        "cmd", "proxy", "aliases", "env", "filters", "members", "swap", "hooks", "peers",
        "globalTTL", "unloadTimeout", "logLevel", "checkEndpoint", "cmdStop", "routing",
        "supervision", "hangTimeout", "maxFailures", "profiles", "selectors", "resources"]
yaml_scalars = (st.none() | st.booleans() | st.integers(-10, 70000) | st.text(max_size=15)
                | st.sampled_from(["${PORT}", "${MODEL_ID}", "${env.HOME}", "${nope}", "5MB"]))
yaml_trees = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4),
    max_leaves=15)


def load(text: str) -> Config | ConfigError:
    try:
        return parse_config(text, "fuzz.yaml", environ={"HOME": "/home/x"})
    except ConfigError as e:
        return e


def assert_clean_refusal(result: Config | ConfigError) -> None:
    if isinstance(result, ConfigError):
        assert result.problems, "a refused config names at least one problem"
        for problem in result.problems:
            assert str(problem).startswith("fuzz.yaml"), problem


@FAST
@given(text=st.text(max_size=300))
def test_any_text_loads_or_is_refused_with_located_problems(text: str) -> None:
    assert_clean_refusal(load(text))


@FAST
@given(tree=yaml_trees)
def test_any_yaml_tree_loads_or_is_refused_with_located_problems(tree: Any) -> None:
    assert_clean_refusal(load(yaml.safe_dump(tree)))


@FAST
@given(model=st.dictionaries(st.sampled_from(KEYS[5:]), yaml_trees, max_size=5))
def test_any_model_entry_loads_or_is_refused(model: dict[str, Any]) -> None:
    tree = {"models": {"m": {"cmd": "server --port ${PORT}", **model}}}
    assert_clean_refusal(load(yaml.safe_dump(tree)))


macro_names = st.text(string.ascii_letters + "_-", min_size=1, max_size=6)
macro_values = st.lists(
    st.text(string.ascii_letters + " -", max_size=5) | macro_names.map(lambda n: f"${{{n}}}"),
    max_size=4).map("".join)


@FAST
@given(macros=st.dictionaries(macro_names, macro_values, max_size=6),
       cmd_refs=st.lists(macro_names, max_size=3))
def test_macro_expansion_terminates_and_substitutes_or_refuses(
        macros: dict[str, str], cmd_refs: list[str]) -> None:
    cmd = "server --port ${PORT} " + " ".join(f"${{{n}}}" for n in cmd_refs)
    tree = {"macros": macros, "models": {"m": {"cmd": cmd}}}
    result = load(yaml.safe_dump(tree))
    assert_clean_refusal(result)
    if isinstance(result, Config):
        expanded = " ".join(result.models["m"].cmd) if isinstance(
            result.models["m"].cmd, list | tuple) else str(result.models["m"].cmd)
        assert "${" not in expanded  # every reference was resolved, none left raw
