"""llama-swap's ``internal/config`` scenarios for the newer keys: ``timeouts``,
``capabilities``, ``upstream``, ``compat``, the ComfyUI model, ``ui``, ``performance``, peer
names, and ``${env.X}`` values holding quotes.

Refusals go through ``llamaswap check-config`` (exit status and the problems on stderr). The
values these keys take are not part of what ``check-config`` prints, so they are read from
the same file through ``load_config``, the loader the daemon itself uses.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from llamaswap.config import Config, load_config

MODEL = "cmd: path/to/cmd --port ${PORT}"


@pytest.fixture
def load(tmp_path: Path) -> Any:
    """``load(yaml_text) -> Config``: write the text to a file and load it as the daemon does."""
    counter = iter(range(1_000_000))

    def run(yaml_text: str) -> Config:
        path = tmp_path / f"keys-{next(counter)}.yaml"
        path.write_text(yaml_text)
        return load_config(str(path))

    return run


# --- timeouts (config_test.go) ---------------------------------------------------------------


def test_model_timeouts_are_read(load) -> None:
    """follows internal/config TestConfig_TimeoutsParsing"""
    timeouts = load(f"models:\n  model1:\n    {MODEL}\n    timeouts:\n      connect: 45\n"
                    "      responseHeader: 120\n").models["model1"].timeouts
    assert (timeouts.connect, timeouts.response_header) == (45, 120)


def test_model_timeouts_default_to_llama_swaps_values(load) -> None:
    """follows internal/config TestConfig_TimeoutsDefaults"""
    timeouts = load(f"models:\n  model1:\n    {MODEL}\n").models["model1"].timeouts
    assert (timeouts.connect, timeouts.response_header, timeouts.tls_handshake,
            timeouts.expect_continue, timeouts.idle_conn) == (30, 0, 10, 1, 90)


def test_zero_model_timeouts_are_kept(load) -> None:
    """follows internal/config TestConfig_TimeoutsZeroAllowed"""
    timeouts = load(f"models:\n  model1:\n    {MODEL}\n    timeouts:\n      connect: 0\n"
                    "      responseHeader: 0\n").models["model1"].timeouts
    assert (timeouts.connect, timeouts.response_header) == (0, 0)


PEER = "peers:\n  peer1:\n    proxy: http://example.com\n    models: [model1]\n"


def test_peer_timeouts_are_read(load) -> None:
    """follows internal/config TestConfig_PeerTimeoutsParsing"""
    timeouts = load(PEER + "    timeouts:\n      connect: 45\n      responseHeader: 120\n"
                    ).peers["peer1"].timeouts
    assert (timeouts.connect, timeouts.response_header) == (45, 120)


def test_peer_timeouts_default_to_llama_swaps_values(load) -> None:
    """follows internal/config TestConfig_PeerTimeoutsDefaults"""
    timeouts = load(PEER).peers["peer1"].timeouts
    assert (timeouts.connect, timeouts.response_header, timeouts.tls_handshake,
            timeouts.expect_continue, timeouts.idle_conn) == (30, 60, 10, 1, 90)


# --- capabilities (model_config_test.go, model_config_anchor_test.go) ------------------------


def capabilities(load, block: str, macros: str = "", model_macros: str = "") -> Any:
    text = (f"{macros}models:\n  model1:\n    {MODEL}\n{model_macros}"
            f"    capabilities:\n{block}")
    return load(text).models["model1"].capabilities


@pytest.mark.parametrize("block, expected", [
    ("      in: [text, audio, image]\n      out: [text, audio, image]\n      tools: true\n"
     "      context: 32000\n",
     (("text", "audio", "image"), ("text", "audio", "image"), True, False, 32000, False)),
    ("      tools: true\n      context: 8192\n", ((), (), True, False, 8192, False)),
    ("      tools: false\n", ((), (), False, False, 0, True)),
    ("      reranker: true\n", ((), (), False, True, 0, False)),
    ("      reranker: false\n", ((), (), False, False, 0, True)),
])
def test_capabilities_are_read_and_false_flags_leave_them_empty(load, block, expected) -> None:
    """follows internal/config TestConfig_ModelCapabilities"""
    caps = capabilities(load, block)
    assert (caps.inputs, caps.outputs, caps.tools, caps.reranker, caps.context,
            caps.empty()) == expected


def test_no_capabilities_block_is_empty(load) -> None:
    """follows internal/config TestConfig_ModelCapabilities ("not set") and
    TestConfig_ModelCapabilities_MacroResolution ("no capabilities block is unchanged")"""
    config = load(f"macros:\n  default_ctx: 98304\nmodels:\n  model1:\n    {MODEL}\n")
    assert config.models["model1"].capabilities.empty()


def test_valid_modalities_load(check_config) -> None:
    """follows internal/config TestConfig_ModelCapabilities_Validate (valid_modalities)"""
    checked = check_config(f"models:\n  model1:\n    {MODEL}\n    capabilities:\n"
                           "      in: [text, image]\n      out: [text, audio]\n"
                           "      tools: true\n      context: 100000\n")
    assert checked.ok, checked.errors


@pytest.mark.parametrize("block, words", [
    ("      in: [text, video]\n", ["model1", "capabilities.in", "video"]),
    ("      out: [video]\n", ["model1", "capabilities.out", "video"]),
    ("      context: -1\n", ["model1", "capabilities.context"]),
])
def test_unknown_modality_or_negative_context_is_refused(check_config, block, words) -> None:
    """follows internal/config TestConfig_ModelCapabilities_Validate"""
    checked = check_config(f"models:\n  model1:\n    {MODEL}\n    capabilities:\n{block}")
    assert not checked.ok
    for word in words:
        assert word in checked.errors


def test_capabilities_take_macros_with_their_types(load) -> None:
    """follows internal/config TestConfig_ModelCapabilities_MacroResolution"""
    caps = capabilities(load, "      in: [text, image]\n      out: [text]\n      tools: true\n"
                              "      context: ${default_ctx}\n",
                        macros="macros:\n  default_ctx: 98304\n")
    assert (caps.inputs, caps.outputs, caps.tools, caps.context) == (
        ("text", "image"), ("text",), True, 98304)
    assert capabilities(load, "      context: ${default_ctx}\n",
                        macros="macros:\n  default_ctx: 4096\n",
                        model_macros="    macros:\n      default_ctx: 65536\n").context == 65536
    assert capabilities(load, "      in:\n        - text\n        - ${img_modality}\n"
                              "      out: [text]\n",
                        macros="macros:\n  img_modality: image\n").inputs == ("text", "image")
    assert capabilities(load, "      tools: ${has_tools}\n",
                        macros="macros:\n  has_tools: true\n").tools is True
    assert capabilities(load, "      reranker: ${is_reranker}\n",
                        macros="macros:\n  is_reranker: true\n").reranker is True
    quoted = capabilities(load, '      context: "${default_ctx}"\n      tools: "${has_tools}"\n',
                          macros="macros:\n  default_ctx: 32768\n  has_tools: true\n")
    assert (quoted.context, quoted.tools) == (32768, True)


def test_unknown_macro_in_capabilities_is_refused(check_config) -> None:
    """follows internal/config TestConfig_ModelCapabilities_MacroResolution (unknown macro)"""
    checked = check_config(f"models:\n  model1:\n    {MODEL}\n    capabilities:\n"
                           "      context: ${undefined_macro}\n")
    assert not checked.ok
    assert "capabilities" in checked.errors and "undefined_macro" in checked.errors


def test_capabilities_merged_from_a_yaml_anchor(load) -> None:
    """follows internal/config TestConfig_ModelCapabilities_YAMLAnchors"""
    caps = load("""
defs:
  vlm-capabilities: &vlm-capabilities
    in: [text, image]
    out: [text]
    tools: true
  llm-capabilities: &llm-capabilities
    in: [text]
    out: [text]
    tools: true
models:
  GLM-4.7-Flash-Q8_0-ik:
    capabilities:
      <<: [*llm-capabilities]
      context: 202752
    cmd: |
      ./llama-server
      # a comment line inside the command
      --port ${PORT}
      --model ./zai-org_GLM-4.7-Flash-Q8_0.gguf
      --ctx-size 202752
""").models["GLM-4.7-Flash-Q8_0-ik"].capabilities
    assert (caps.inputs, caps.outputs, caps.tools, caps.context) == (
        ("text",), ("text",), True, 202752)


def test_anchor_capabilities_take_each_models_own_macro(load) -> None:
    """follows internal/config TestConfig_ModelCapabilities_YAMLAnchorsWithMacros"""
    models = load("""
macros:
  default_ctx: 98304
defs:
  llm-capabilities: &llm-capabilities
    in: [text]
    out: [text]
    tools: true
    context: ${default_ctx}
models:
  model1:
    cmd: path/to/cmd --port ${PORT}
    macros: {default_ctx: 4096}
    capabilities:
      <<: [*llm-capabilities]
  model2:
    cmd: path/to/cmd --port ${PORT}
    macros: {default_ctx: 8192}
    capabilities:
      <<: [*llm-capabilities]
""").models
    for model_id, context in (("model1", 4096), ("model2", 8192)):
        caps = models[model_id].capabilities
        assert (caps.inputs, caps.outputs, caps.tools, caps.context) == (
            ("text",), ("text",), True, context)


# --- upstream.ignorePaths (upstream_test.go) ---------------------------------------------------

UPSTREAM_MODEL = ('models:\n  model1:\n    cmd: path/to/cmd --arg1 one\n'
                  '    proxy: "http://localhost:8080"\n')
DEFAULT_IGNORE = r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$"


@pytest.mark.parametrize("upstream", ["", "upstream: {}\n"])
def test_ignore_paths_default_to_static_files(load, upstream) -> None:
    """follows internal/config TestConfig_UpstreamIgnorePaths_DefaultWhenAbsent and
    TestConfig_UpstreamIgnorePaths_DefaultWhenSectionEmpty"""
    patterns = load(upstream + UPSTREAM_MODEL).ignore_paths
    assert patterns == (DEFAULT_IGNORE,)
    ignored = re.compile(patterns[0])
    for path in ("/foo.js", "/bar/baz.json", "/static/img.png", "/notes.txt", "/favicon.ico"):
        assert ignored.search(path), path
    for path in ("/v1/chat/completions", "/v1/models", "/health"):
        assert not ignored.search(path), path


def test_configured_ignore_paths_replace_the_default(load) -> None:
    """follows internal/config TestConfig_UpstreamIgnorePaths_Compiles"""
    patterns = load('upstream:\n  ignorePaths:\n'
                    '    - ".*\\\\.(js|json|css|png|gif|jpg|jpeg|txt)$"\n'
                    '    - "^/static/.*"\n' + UPSTREAM_MODEL).ignore_paths
    assert len(patterns) == 2
    assets, static = (re.compile(p) for p in patterns)
    assert assets.search("/foo.js") and assets.search("/bar/baz.json")
    assert not assets.search("/v1/chat/completions")
    assert static.search("/static/foo.png") and not static.search("/v1/chat/completions")


def test_ignore_path_that_is_not_a_regular_expression_is_refused(check_config) -> None:
    """follows internal/config TestConfig_UpstreamIgnorePaths_InvalidRegexReturnsError"""
    checked = check_config('upstream:\n  ignorePaths:\n    - "[invalid("\n' + UPSTREAM_MODEL)
    assert not checked.ok
    assert "upstream.ignorePaths" in checked.errors
    assert "invalid regular expression" in checked.errors


# --- compat and the ComfyUI model (model_config_test.go) --------------------------------------


def test_ignore_websockets_is_per_model_and_off_by_default(load) -> None:
    """follows internal/config TestConfig_ModelCompat"""
    models = load("models:\n  enabled:\n    cmd: enabled --port ${PORT}\n"
                  "    compat:\n      ignoreWebsockets: true\n"
                  "  default:\n    cmd: default --port ${PORT}\n").models
    assert models["enabled"].ignore_websockets is True
    assert models["default"].ignore_websockets is False


@pytest.mark.parametrize("limit, expected", [(0, 50), (10, 50), (50, 50), (60, 60)])
def test_comfyui_model_gets_a_higher_limit_and_ignores_websockets(load, limit,
                                                                  expected) -> None:
    """follows internal/config TestConfig_ComfyUIOverrides"""
    models = load(f"""
models:
  comfyui_auto:
    cmd: comfyui --port ${{PORT}}
    concurrencyLimit: {limit}
    compat:
      ignoreWebsockets: false
  regular:
    cmd: regular --port ${{PORT}}
    concurrencyLimit: 10
""").models
    assert models["comfyui_auto"].concurrency_limit == expected
    assert models["comfyui_auto"].ignore_websockets is True
    assert models["regular"].concurrency_limit == 10
    assert models["regular"].ignore_websockets is False


# --- ui (ui_test.go) and performance (performance_test.go) ------------------------------------


@pytest.mark.parametrize("yaml_text, expected", [
    ("", ("X-Session-ID", "X-Litellm-Session-Id")),
    ("ui:\n  activity:\n    session_id: [' X-Trace-ID ', '', x-trace-id, X-Session-ID]\n",
     ("X-Trace-ID", "X-Session-ID")),
    ("ui:\n  activity:\n    session_id: []\n", ()),
])
def test_session_id_headers_are_trimmed_deduplicated_or_off(load, yaml_text,
                                                            expected) -> None:
    """follows internal/config TestConfig_UIActivitySessionID"""
    assert load(yaml_text).ui.activity.session_id == expected


@pytest.mark.parametrize("section, disabled, every", [
    ("", False, 5),
    ("performance:\n  enable: true\n  every: 30s\n", False, 30),
    ("performance:\n  disabled: true\n", True, 5),
    ("performance:\n  every: 10s\n", False, 10),
    ("performance:\n  every: 1m30s\n", False, 90),
])
def test_performance_sampling_settings(load, section, disabled, every) -> None:
    """follows internal/config TestPerformanceConfig_Defaults, TestPerformanceConfig_CustomValues,
    TestPerformanceConfig_Disabled, TestPerformanceConfig_PartialValues and
    TestPerformanceConfig_ComplexDurations"""
    performance = load(f"{section}models:\n  model1:\n    {MODEL}\n").performance
    assert (performance.disabled, performance.every) == (disabled, every)


def test_performance_sampling_faster_than_five_seconds_is_refused(check_config) -> None:
    """follows internal/config TestPerformanceConfig_InvalidEvery"""
    checked = check_config(f"performance:\n  every: 4s\nmodels:\n  model1:\n    {MODEL}\n")
    assert not checked.ok
    assert "performance.every" in checked.errors and "at least 5s" in checked.errors


# --- peer names (peer_test.go) ------------------------------------------------------------------


def test_two_peers_combining_into_one_name_are_refused(check_config) -> None:
    """follows internal/config TestConfig_ValidatePeerNamespace (ambiguous constructed name)"""
    checked = check_config("""
peers:
  a: {proxy: "http://127.0.0.1:9", models: [b/c]}
  a/b: {proxy: "http://127.0.0.1:9", models: [c]}
""")
    assert not checked.ok
    assert "a/b/c" in checked.errors


@pytest.mark.parametrize("claim", [
    'models:\n  peer/model: {cmd: "echo ${PORT}"}\n',
    'models:\n  local: {cmd: "echo ${PORT}", aliases: [peer/model]}\n',
    'models:\n  local: {cmd: "echo ${PORT}"}\n'
    'selectors:\n  peer/model: {strategy: pin, targets: [local]}\n',
    'models:\n  local: {cmd: "echo ${PORT}"}\n'
    'profiles:\n  profile:\n    pins: {peer/model: local}\n',
    'models:\n  local:\n    cmd: "echo ${PORT}"\n    filters:\n      setParamsByID:\n'
    '        peer/model: {temperature: 0.5}\n',
])
def test_a_local_name_taking_a_peer_models_full_name_is_refused(check_config, claim) -> None:
    """follows internal/config TestConfig_ValidatePeerNamespace (local model, local alias,
    selector, profile pin) and TestConfig_LoadPeerNamespaceConflict"""
    checked = check_config(claim + 'peers:\n  peer: {proxy: "http://example.com", '
                                   'models: [model]}\n')
    assert not checked.ok
    assert "peer/model" in checked.errors


# --- ${env.X} holding quotes or backslashes (config_test.go TestConfig_EnvMacros) -------------


def test_env_value_with_quotes_or_backslashes_arrives_intact(check_config,
                                                             monkeypatch) -> None:
    """follows internal/config TestConfig_EnvMacros (the quote and backslash cases)

    llama-swap's test asserts that the command keeps the value's quotes and backslashes;
    llamaswap keeps them too, and as a deliberate difference (docs/differences.md) also keeps
    the value one argument: its quotes are data, not shell quoting."""
    monkeypatch.setenv("COMPAT_QUOTED", 'value with "quotes"')
    monkeypatch.setenv("COMPAT_BACKSLASH", "path\\to\\file")
    model = check_config(r"""
models:
  test:
    cmd: "server --arg \"${env.COMPAT_QUOTED}\" --path \"${env.COMPAT_BACKSLASH}\""
    proxy: "http://localhost:8080"
    metadata:
      quoted: "${env.COMPAT_QUOTED}"
      path: "${env.COMPAT_BACKSLASH}"
""").resolved["models"]["test"]
    assert shlex.split(model["cmd"]) == ["server", "--arg", 'value with "quotes"',
                                         "--path", "path\\to\\file"]
    assert model["metadata"] == {"quoted": 'value with "quotes"', "path": "path\\to\\file"}
