"""llama-swap HEAD's keys as llamaswap reads them: timeouts, capabilities, compat, ui,
performance, upstream, checkEndpoint URLs, env values inserted literally, peer namespaces."""

from __future__ import annotations

import textwrap

import pytest

from llamaswap.config import Config, ConfigError, parse_config
from llamaswap.config.cmdline import insert_literal, split_command
from llamaswap.config.model import DEFAULT_IGNORE_PATHS, Capabilities, Timeouts
from llamaswap.process import health_url


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), "c.yaml", environ or {})


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    return info.value.problems


# --- timeouts -------------------------------------------------------------------------------


def test_model_and_peer_timeouts_default_like_llama_swap_and_take_each_key() -> None:
    config = parse("""
        models:
          m: {cmd: "s ${PORT}"}
          t: {cmd: "s ${PORT}", timeouts: {connect: 2, responseHeader: 7, idleConn: 0}}
        peers:
          p: {proxy: "http://h:1", models: [a], timeouts: {keepalive: 5, tlsHandshake: 3}}
        """)
    assert config.models["m"].timeouts == Timeouts()
    assert (Timeouts().connect, Timeouts().response_header, Timeouts().idle_conn) == (30, 0, 90)
    assert config.models["t"].timeouts == Timeouts(connect=2, response_header=7, idle_conn=0)
    peer = config.peers["p"]
    assert peer.timeouts == Timeouts(keepalive=5, tls_handshake=3, response_header=60)
    assert (peer.connect_timeout, peer.response_header_timeout) == (30, 60)
    assert config.warnings == ()


def test_a_negative_timeout_names_its_key() -> None:
    assert problems('models:\n  m: {cmd: "s ${PORT}", timeouts: {connect: -1}}\n') == [
        "c.yaml: models.m.timeouts.connect: must be >= 0 seconds, got -1"]


# --- capabilities and compat ----------------------------------------------------------------


def test_capabilities_are_read_and_bad_modalities_refused() -> None:
    config = parse("""
        models:
          m:
            cmd: "s ${PORT}"
            capabilities: {in: [text, image], out: [text], tools: true, context: 32768}
        """)
    assert config.models["m"].capabilities == Capabilities(
        inputs=("text", "image"), outputs=("text",), tools=True, context=32768)
    assert Capabilities().empty() and not config.models["m"].capabilities.empty()
    found = problems('models:\n  m: {cmd: "s ${PORT}", capabilities: {in: [video]}}\n')
    assert any(line.startswith("c.yaml: models.m.capabilities.in[0]") and "video" in line
               for line in found), found


def test_compat_ignore_websockets_and_the_comfyui_model() -> None:
    config = parse("""
        models:
          m: {cmd: "s ${PORT}", compat: {ignoreWebsockets: true}}
          n: {cmd: "s ${PORT}"}
          comfyui_auto: {cmd: "s ${PORT}", concurrencyLimit: 4}
        """)
    assert config.models["m"].ignore_websockets and not config.models["n"].ignore_websockets
    comfy = config.models["comfyui_auto"]
    assert comfy.ignore_websockets and comfy.concurrency_limit == 50


# --- ui, performance, upstream --------------------------------------------------------------


def test_ui_performance_and_upstream_defaults() -> None:
    config = parse('models:\n  m: {cmd: "s ${PORT}"}\n')
    assert config.ui.activity.session_id == ("X-Session-ID", "X-Litellm-Session-Id")
    assert (config.performance.disabled, config.performance.every) == (False, 5.0)
    assert config.ignore_paths == DEFAULT_IGNORE_PATHS


def test_ui_performance_and_upstream_are_read() -> None:
    config = parse("""
        ui: {activity: {session_id: [" X-Conv ", x-conv, X-Other]}}
        performance: {disabled: true, every: 1m30s}
        upstream: {ignorePaths: ['^/static/', '\\.map$']}
        models:
          m: {cmd: "s ${PORT}"}
        """)
    assert config.ui.activity.session_id == ("X-Conv", "X-Other")
    assert (config.performance.disabled, config.performance.every) == (True, 90.0)
    assert config.ignore_paths == ("^/static/", "\\.map$")


@pytest.mark.parametrize(("snippet", "expected"), [
    ("performance: {every: 2s}", "c.yaml: performance.every: every must be at least 5s, got 2s"),
    ("performance: {every: soon}", "c.yaml: performance.every: must be a duration like 5s, "
                                   "30s or 1m, got 'soon'"),
    ("upstream: {ignorePaths: ['(']}", "c.yaml: upstream.ignorePaths[0]: invalid regular "
                                       "expression '('"),
])
def test_bad_performance_and_upstream_values(snippet: str, expected: str) -> None:
    found = problems(snippet + '\nmodels:\n  m: {cmd: "s ${PORT}"}\n')
    assert any(line.startswith(expected) for line in found), found


# --- checkEndpoint --------------------------------------------------------------------------


def test_check_endpoint_as_a_full_url_is_polled_as_given() -> None:
    config = parse("""
        models:
          url: {cmd: "s ${PORT}", checkEndpoint: "http://127.0.0.1:${PORT}/ready?deep=1"}
          path: {cmd: "s ${PORT}", checkEndpoint: "v1/models"}
        """)
    url, path = config.models["url"], config.models["path"]
    assert health_url(url) == f"http://127.0.0.1:{url.port}/ready?deep=1"
    assert health_url(path) == f"http://localhost:{path.port}/v1/models"
    found = problems('models:\n  m: {cmd: "s ${PORT}", checkEndpoint: "http://"}\n')
    assert any(line.startswith("c.yaml: models.m.checkEndpoint: invalid URL") for line in found)


# --- ${env.X} ---------------------------------------------------------------------------------


def test_env_values_are_inserted_literally_quotes_never_act_as_quoting() -> None:
    env = {"Q": 'value with "quotes"', "S": "it's", "WIN": "C:\\models\\x", "TTL": "300",
           "ARGS": "--ctx 4096"}
    config = parse("""
        models:
          m:
            cmd: "server --arg \\"${env.Q}\\" --s '${env.S}' --path ${env.WIN} ${env.ARGS}"
            cmdStop: "stop --who ${env.S}"
            proxy: "http://127.0.0.1:9"
            name: ${env.Q}
            ttl: ${env.TTL}
        """, env)
    model = config.models["m"]
    assert model.cmd == ("server", "--arg", 'value with "quotes"', "--s", "it's",
                         "--path", "C:\\models\\x", "--ctx", "4096")
    assert split_command(model.cmd_stop) == ["stop", "--who", "it's"]
    assert (model.name, model.ttl) == ('value with "quotes"', 300.0)


def test_llama_swaps_env_quote_scenario_keeps_the_quotes() -> None:
    """llama-swap's config test "env value with quotes is escaped for YAML"."""
    config = parse('models:\n  test:\n    cmd: "server --arg \\"${env.TEST_QUOTED}\\""\n'
                   '    proxy: "http://127.0.0.1:9"\n', {"TEST_QUOTED": 'value with "quotes"'})
    assert '"quotes"' in " ".join(config.models["test"].cmd)


@pytest.mark.parametrize("value", ['a"b', "a'b", "a\\b", "'\"'\\", "x y 'z'"])
@pytest.mark.parametrize("template", ["pre{}post", '"{}"', "'{}'", "a {} b"])
def test_insert_literal_reads_back_exactly(value: str, template: str) -> None:
    text = template.format("\ue0000\ue001")
    inserted = split_command(insert_literal(text, {"\ue0000\ue001": value}))
    quoted = template.startswith(("'", '"'))
    expected = template.replace("'", "").replace('"', "").format(value) if quoted \
        else template.format(value)
    assert " ".join(inserted) == expected if not quoted else inserted == [expected]


# --- peers ------------------------------------------------------------------------------------


def test_peers_whose_names_combine_into_one_id_are_refused() -> None:
    found = problems("""
        peers:
          a: {proxy: "http://h:1", models: [b/c]}
          a/b: {proxy: "http://h:2", models: [c]}
        models:
          m: {cmd: "s ${PORT}"}
        """)
    assert found == ['c.yaml: peers.a/b.models: peer model name "a/b/c" is ambiguous between '
                     'peers.a model "b/c" and peers.a/b model "c"']
