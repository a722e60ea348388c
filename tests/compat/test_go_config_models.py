"""llama-swap's ``internal/config`` scenarios about loading a whole file, splitting commands,
filters, finding models and peer models.

Config-only scenarios go through ``llamaswap check-config`` (or ``load_config`` on the same
file, the daemon's loader, for what the printout does not show). Scenarios whose effect is
on requests are replayed over HTTP against a real llamaswap whose peers are an echo server,
so the test sees which peer got the request, with which model name and which body.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from llamaswap.config import Config, load_config
from llamaswap.policy import ModelState
from tests.compat.support import harness, own_port_model

body_json = harness.body_json
wait_for = harness.wait_for


@pytest.fixture
def load(tmp_path: Path) -> Any:
    """``load(yaml_text) -> Config``: write the text to a file and load it as the daemon does."""
    counter = iter(range(1_000_000))

    def run(yaml_text: str) -> Config:
        path = tmp_path / f"models-{next(counter)}.yaml"
        path.write_text(yaml_text)
        return load_config(str(path))

    return run


# --- a whole file (config_posix_test.go, config_test.go) ----------------------------------------

FULL_CONFIG = """
macros:
  svr-path: "path/to/server"
hooks:
  on_startup:
    preload: ["model1", "model2"]
models:
  model1:
    cmd: path/to/cmd --arg1 one
    proxy: "http://localhost:8080"
    name: "Model 1"
    description: "This is model 1"
    aliases: ["m1", "model-one"]
    env: ["VAR1=value1", "VAR2=value2"]
    checkEndpoint: "/health"
  model2:
    cmd: ${svr-path} --arg1 one
    proxy: "http://localhost:8081"
    aliases: ["m2"]
    checkEndpoint: "/"
  model3:
    cmd: path/to/cmd --arg1 one
    proxy: "http://localhost:8081"
    aliases: ["mthree"]
    checkEndpoint: "/"
  model4:
    cmd: path/to/cmd --arg1 one
    proxy: "http://localhost:8082"
    checkEndpoint: "/"
healthCheckTimeout: 15
profiles:
  test:
    description: Test profile
    pins:
      fast: model1
      disabled: ~
groups:
  group1:
    swap: true
    exclusive: false
    members: ["model2"]
  forever:
    exclusive: false
    persistent: true
    members: ["model4"]
"""


def test_a_full_file_loads_with_every_value_and_default(check_config, load) -> None:
    """follows internal/config TestConfig_LoadPosix (and TestConfig_LoadWindows)

    One deliberate difference: ``logToStdout`` defaults to ``both`` (llama-swap: ``proxy``),
    see docs/differences.md."""
    resolved = check_config(FULL_CONFIG).resolved
    assert (resolved["logLevel"], resolved["startPort"], resolved["healthCheckTimeout"],
            resolved["unloadTimeout"], resolved["preload"]) == (
        "info", 5800, 15, 10, ["model1", "model2"])
    models = resolved["models"]
    assert models["model1"] == {
        "cmd": "path/to/cmd --arg1 one", "proxy": "http://localhost:8080",
        "checkEndpoint": "/health", "aliases": ["m1", "model-one"],
        "env": ["VAR1=value1", "VAR2=value2"], "ttl": 0, "unloadTimeout": 10,
        "concurrencyLimit": 10, "unlisted": False, "name": "Model 1",
        "description": "This is model 1"}
    assert models["model2"]["cmd"] == "path/to/server --arg1 one"
    assert [(models[m]["proxy"], models[m]["checkEndpoint"], models[m]["aliases"])
            for m in ("model2", "model3", "model4")] == [
        ("http://localhost:8081", "/", ["m2"]), ("http://localhost:8081", "/", ["mthree"]),
        ("http://localhost:8082", "/", [])]
    assert resolved["groups"] == {
        "group1": {"swap": True, "exclusive": False, "persistent": False,
                   "members": ["model2"]},
        "forever": {"swap": True, "exclusive": False, "persistent": True,
                    "members": ["model4"]},
        "(default)": {"swap": True, "exclusive": True, "persistent": False,
                      "members": ["model1", "model3"]},
    }
    config = load(FULL_CONFIG)
    assert config.profiles["test"].description == "Test profile"
    assert dict(config.profiles["test"].pins) == {"fast": "model1", "disabled": None}
    assert config.log_time_format == "" and config.log_to_stdout == "both"
    assert config.send_loading_state is False
    assert config.metrics_max_in_memory == 1000
    assert config.capture_buffer_bytes == 5 * 1024 * 1024
    assert config.resolve("m1") == "model1"


def test_a_model_is_found_by_its_id_or_an_alias(load) -> None:
    """follows internal/config TestConfig_FindConfig"""
    config = load("""
models:
  model1:
    cmd: python model1.py
    proxy: http://localhost:8080
    aliases: [m1, model-one]
  model2:
    cmd: python model2.py
    proxy: http://localhost:8081
    aliases: [m2, model-two]
""")
    assert [config.resolve(name) for name in ("model1", "m1", "model-one", "m2", "model3")] \
        == ["model1", "model1", "model1", "model2", None]


# --- commands (config_posix_test.go, model_config_test.go) --------------------------------------


def test_commands_split_like_a_shell_without_comments(check_config) -> None:
    """follows internal/config TestConfig_SanitizeCommand"""
    cmd = check_config("""
models:
  model1:
    proxy: http://localhost:8080
    cmd: |
      python model1.py \\
        -a "double quotes" \\
        --arg2 'single quotes'
        -s
        # comment 1
        --arg3 123 \\

          # comment 2
        --arg4 '"string in string"'


        # this one goes too, with the blank lines above
        -c "'single quoted'"
""").resolved["models"]["model1"]["cmd"]
    assert shlex.split(cmd) == ["python", "model1.py", "-a", "double quotes",
                                "--arg2", "single quotes", "-s", "--arg3", "123",
                                "--arg4", '"string in string"', "-c", "'single quoted'"]
    empty = check_config('models:\n  model1:\n    proxy: http://localhost:8080\n    cmd: ""\n')
    assert not empty.ok and "model1" in empty.errors and "cmd" in empty.errors


def test_continued_lines_make_one_command(check_config) -> None:
    """follows internal/config TestConfig_ModelConfigSanitizedCommand"""
    cmd = check_config("""
models:
  model1:
    proxy: http://localhost:8080
    cmd: |
      python model1.py \\
          --arg1 value1 \\
          --arg2 value2
""").resolved["models"]["model1"]["cmd"]
    assert shlex.split(cmd) == ["python", "model1.py", "--arg1", "value1", "--arg2", "value2"]


# --- filters and sendLoadingState (model_config_test.go) ----------------------------------------


def test_strip_params_take_macros_and_are_cleaned(load) -> None:
    """follows internal/config TestConfig_ModelFilters"""
    models = load("""
macros:
  default_strip: "temperature, top_p"
models:
  model1:
    cmd: path/to/cmd --port ${PORT}
    filters:
      stripParams: "model, top_k, top_k, temperature, ${default_strip}, , ,"
  legacy:
    cmd: path/to/cmd --port ${PORT}
    filters:
      strip_params: "model, top_k, top_k, temperature, ${default_strip}, , ,"
""").models
    for model_id in ("model1", "legacy"):  # ``model`` dropped, duplicates and blanks too
        assert models[model_id].filters.strip_params == ("temperature", "top_k", "top_p")


def test_strip_and_set_params_together(load) -> None:
    """follows internal/config TestConfig_ModelFiltersWithSetParams"""
    filters = load("""
models:
  model1:
    cmd: path/to/cmd --port ${PORT}
    filters:
      stripParams: "top_k"
      setParams:
        temperature: 0.7
        top_p: 0.9
        stop: ["<|end|>", "<|stop|>"]
""").models["model1"].filters
    assert filters.strip_params == ("top_k",)
    assert sorted(filters.set_params) == ["stop", "temperature", "top_p"]
    assert (filters.set_params["temperature"], filters.set_params["top_p"]) == (0.7, 0.9)


async def _streamed_text(swapper: Any, model: str) -> str:
    response = await swapper.chat(model, stream=True)
    assert response.code == 200
    events = [json.loads(line[6:]) for line in (await treq.text_content(response)).splitlines()
              if line.startswith("data: {")]
    return "".join(e["choices"][0]["delta"].get("reasoning_content") or "" for e in events)


@pytest_twisted.ensureDeferred
async def test_send_loading_state_per_model_overrides_the_global_value(llamaswap) -> None:
    """follows internal/config TestConfig_ModelSendLoadingState"""
    swapper = await llamaswap(f"""
sendLoadingState: true
models:
  model1:
    {own_port_model("model1")}
    sendLoadingState: false
  model2:
    {own_port_model("model2")}
""")
    assert "Done!" not in await _streamed_text(swapper, "model1")  # its own false wins
    assert "Done!" in await _streamed_text(swapper, "model2")  # the global true applies


# --- peers (peer_test.go), over HTTP with an echo server as the peer ---------------------------


def _sent(answer: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The path the peer got and the JSON body it got."""
    received = answer["received"]
    return received["path"], json.loads(received["body"])


@pytest_twisted.ensureDeferred
async def test_peer_set_params_reach_the_peer(llamaswap, echo_peer) -> None:
    """follows internal/config TestPeerConfig_WithFilters"""
    swapper = await llamaswap(f"""
peers:
  openrouter:
    proxy: {echo_peer.url}
    apiKey: sk-test
    models: [model_a]
    filters:
      setParams:
        temperature: 0.7
        provider:
          data_collection: deny
""")
    _, body = _sent(await body_json(await swapper.chat("model_a", temperature=0.1)))
    assert body["temperature"] == 0.7
    assert body["provider"] == {"data_collection": "deny"}
    assert echo_peer.seen[-1]["headers"]["authorization"] == "Bearer sk-test"


@pytest_twisted.ensureDeferred
async def test_peer_strip_and_set_params_reach_the_peer(llamaswap, echo_peer) -> None:
    """follows internal/config TestPeerConfig_WithBothFilters"""
    swapper = await llamaswap(f"""
peers:
  openrouter:
    proxy: {echo_peer.url}
    apiKey: sk-test
    models: [model_a]
    filters:
      stripParams: "temperature, top_p"
      setParams:
        max_tokens: 1000
""")
    _, body = _sent(await body_json(await swapper.chat("model_a", temperature=0.1, top_p=0.5,
                                                       top_k=3)))
    assert "temperature" not in body and "top_p" not in body
    assert body["top_k"] == 3 and body["max_tokens"] == 1000


@pytest_twisted.ensureDeferred
async def test_peer_model_names_resolve_by_full_name_or_a_unique_bare_name(
        llamaswap, echo_peer) -> None:
    """follows internal/config TestConfig_ResolvePeerModel"""
    swapper = await llamaswap(f"""
models:
  shared:
    {own_port_model("shared")}
peers:
  p1: {{proxy: "{echo_peer.url}/p1", models: [shared, org/model]}}
  p2: {{proxy: "{echo_peer.url}/p2", models: [shared, unique]}}
""")
    for asked, peer, model in (("p1/shared", "p1", "shared"), ("p2/shared", "p2", "shared"),
                               ("p1/org/model", "p1", "org/model"),
                               ("unique", "p2", "unique")):
        path, body = _sent(await body_json(await swapper.chat(asked)))
        assert (path, body["model"]) == (f"/{peer}/v1/chat/completions", model), asked
    seen = len(echo_peer.seen)
    local = await body_json(await swapper.chat("shared"))  # the local model, not a peer
    assert local["model"] == "shared" and "peer" not in local
    assert (await swapper.chat("missing")).code == 404
    assert len(echo_peer.seen) == seen


@pytest_twisted.ensureDeferred
async def test_a_full_peer_name_wins_over_a_bare_name_with_a_slash(llamaswap,
                                                                   echo_peer) -> None:
    """follows internal/config TestConfig_ResolvePeerModel_FQNPrecedesBareName"""
    swapper = await llamaswap(f"""
peers:
  p1: {{proxy: "{echo_peer.url}/p1", models: [model]}}
  p2: {{proxy: "{echo_peer.url}/p2", models: [p1/model]}}
""")
    path, body = _sent(await body_json(await swapper.chat("p1/model")))
    assert (path, body["model"]) == ("/p1/v1/chat/completions", "model")
    path, body = _sent(await body_json(await swapper.chat("p2/p1/model")))
    assert (path, body["model"]) == ("/p2/v1/chat/completions", "p1/model")


# --- the matrix (matrix_test.go) -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_evict_costs_named_by_a_var_apply_to_its_model(llamaswap) -> None:
    """follows internal/config TestValidateMatrix_ResolvedEvictCosts"""
    # With b and c running, a runs beside one of them. Equal costs would keep c (the first
    # set); the cost given through b's var makes b dearer to evict, so c goes.
    swapper = await llamaswap("models:\n" + "".join(
        f"  {name}:\n    {own_port_model(name)}\n" for name in ("a", "b", "c")) + """
matrix:
  vars: {B: b, C: c}
  evict_costs: {B: 10}
  sets:
    a_with_c: "a & C"
    a_with_b: "a & B"
    b_and_c: "B & C"
""")
    for name in ("b", "c", "a"):
        assert (await swapper.chat(name)).code == 200
    await wait_for(lambda: swapper.pid("c") is None)
    assert swapper.state("b") is ModelState.READY and swapper.state("a") is ModelState.READY



def test_a_matrix_set_expanding_past_4096_member_sets_is_refused(check_config) -> None:
    """follows internal/config TestConfig_Selectors_SpilloverCoexistence ("matrix symbolic
    large"): a deliberate difference (docs/differences.md). llama-swap evaluates set
    expressions without expanding them and accepts this config; llamaswap expands each set
    into its member sets and refuses one that would have more than 4096, naming the set."""
    choices = [[f"model-{d}-{c}" for c in range(11)] for d in range(4)]  # 11**4 member sets
    names = ["target", *(name for row in choices for name in row)]
    sets = " & ".join(["target", *("(" + " | ".join(row) + ")" for row in choices)])
    checked = check_config("models:\n" + "".join(f'  {n}: {{cmd: "echo ${{PORT}}"}}\n'
                                                   for n in names)
                           + f'matrix:\n  sets:\n    large: "{sets}"\n'
                           "selectors:\n  public:\n    strategy: spillover\n"
                           "    targets: [target, model-0-0]\n")
    assert not checked.ok
    assert "matrix.sets" in checked.errors and '"large"' in checked.errors
    assert "4096" in checked.errors
    assert "selectors" not in checked.errors  # no second, misleading problem


@pytest.mark.parametrize("key", ["abcdefghijklmnopqrstuvwxyzABCDEF", "model-var", "model.var"])
def test_matrix_var_keys_of_letters_digits_dots_and_dashes_load(check_config, key) -> None:
    """follows internal/config TestValidateMatrix_VarKeyValidation (valid keys)"""
    checked = check_config('models:\n  gemma: {cmd: "server --port ${PORT}"}\n'
                           f'matrix:\n  vars: {{"{key}": gemma}}\n  sets:\n    s: "{key}"\n')
    assert checked.ok, checked.errors


@pytest.mark.parametrize("key", ["abcdefghijklmnopqrstuvwxyzABCDEFG", "a_b", ""])
def test_matrix_var_keys_too_long_empty_or_with_other_characters_are_refused(
        check_config, key) -> None:
    """follows internal/config TestValidateMatrix_VarKeyValidation (invalid keys)"""
    checked = check_config('models:\n  gemma: {cmd: "server --port ${PORT}"}\n'
                           f'matrix:\n  vars: {{"{key}": gemma}}\n  sets:\n    s: gemma\n')
    assert not checked.ok
    assert f"matrix.vars.{key}" in checked.errors and "1-32 characters" in checked.errors


# --- filters applied to requests (filters_test.go) ---------------------------------------------

STRIP_CASES = {  # peer name -> (stripParams, what of SENT is left)
    "empty": ("", ["temperature", "top_k", "top_p"]),
    "single": ("temperature", ["top_k", "top_p"]),
    "several": ("temperature, top_p, top_k", []),
    "with-model": ("model, temperature, top_p", ["top_k"]),
    "only-model": ("model", ["temperature", "top_k", "top_p"]),
    "twice": ("temperature, top_p, temperature", ["top_k"]),
    "blanks": ("  temperature  ,  top_p  ", ["top_k"]),
    "empties": ("temperature,,top_p,", ["top_k"]),
}
SENT = {"temperature": 0.1, "top_k": 3, "top_p": 0.5}


@pytest_twisted.ensureDeferred
async def test_strip_params_never_strip_the_model(llamaswap, echo_peer) -> None:
    """follows internal/config TestFilters_SanitizedStripParams and TestProtectedParams"""
    peers = "".join(f'  {name}: {{proxy: "{echo_peer.url}", models: [m-{name}], '
                    f'filters: {{stripParams: "{strip}"}}}}\n'
                    for name, (strip, _) in STRIP_CASES.items())
    swapper = await llamaswap("peers:\n" + peers)
    for name, (_, left) in STRIP_CASES.items():
        _, body = _sent(await body_json(await swapper.chat(f"m-{name}", **SENT)))
        assert sorted(set(body) & set(SENT)) == left, name
        assert body["model"] == f"m-{name}", name


@pytest_twisted.ensureDeferred
async def test_set_params_are_applied_except_the_model(llamaswap, echo_peer) -> None:
    """follows internal/config TestFilters_SanitizedSetParams and TestProtectedParams"""
    swapper = await llamaswap(f"""
peers:
  plain: {{proxy: "{echo_peer.url}", models: [m-plain], filters: {{setParams: {{}}}}}}
  normal:
    proxy: "{echo_peer.url}"
    models: [m-normal]
    filters: {{setParams: {{temperature: 0.7, top_p: 0.9}}}}
  protected:
    proxy: "{echo_peer.url}"
    models: [m-protected]
    filters: {{setParams: {{model: should-be-filtered, temperature: 0.7}}}}
  nested:
    proxy: "{echo_peer.url}"
    models: [m-nested]
    filters:
      setParams:
        provider: {{data_collection: deny, allow_fallbacks: false}}
        transforms: [middle-out]
""")
    sent = {"temperature": 0.1}
    expected = {
        "m-plain": {"model": "m-plain", "temperature": 0.1},
        "m-normal": {"model": "m-normal", "temperature": 0.7, "top_p": 0.9},
        "m-protected": {"model": "m-protected", "temperature": 0.7},
        "m-nested": {"model": "m-nested", "temperature": 0.1, "transforms": ["middle-out"],
                     "provider": {"data_collection": "deny", "allow_fallbacks": False}},
    }
    for model, want in expected.items():
        _, body = _sent(await body_json(await swapper.chat(model, **sent)))
        del body["messages"]
        assert body == want, model


@pytest_twisted.ensureDeferred
async def test_set_params_by_id_follow_the_name_asked_for(llamaswap) -> None:
    """follows internal/config TestFilters_SanitizedSetParamsByID and TestProtectedParams"""
    swapper = await llamaswap(f"""
models:
  model1:
    {own_port_model("model1")}
    filters:
      setParamsByID:
        model1: {{model: should-be-filtered, temperature: 0.7, top_p: 0.9}}
        "model1:high": {{reasoning_effort: high, z_param: z, a_param: a}}
        "model1:low": {{reasoning_effort: low}}
        "model1:only-model": {{model: should-be-filtered}}
""")

    async def sent_as(name: str) -> dict[str, Any]:
        answer = await body_json(await swapper.chat(name, test_echo=True))
        body = json.loads(answer["body"])
        del body["messages"], body["test_echo"]
        return dict(body)

    assert await sent_as("model1") == {"model": "model1", "temperature": 0.7, "top_p": 0.9}
    assert await sent_as("model1:high") == {"model": "model1:high", "reasoning_effort": "high",
                                            "z_param": "z", "a_param": "a"}
    assert await sent_as("model1:low") == {"model": "model1:low", "reasoning_effort": "low"}
    assert await sent_as("model1:only-model") == {"model": "model1:only-model"}


# --- a peer's own settings (peer_test.go) --------------------------------------------------------


@pytest.mark.parametrize("peer, words", [
    ("proxy: http://192.168.1.23\n    models: [model_a, model_b]\n", None),
    ("proxy: https://openrouter.ai/api\n    apiKey: sk-test-key\n"
     "    models: [meta-llama/llama-3.1-8b-instruct]\n", None),
    ("models: [model_a]\n", ["peers.box.proxy", "proxy is required"]),
    ('proxy: ""\n    models: [model_a]\n', ["peers.box.proxy", "proxy is required"]),
    ('proxy: "://invalid"\n    models: [model_a]\n', ["peers.box.proxy", "invalid peer proxy URL"]),
    ("proxy: http://localhost:8080\n", ["peers.box.models", "can not be empty"]),
    ("proxy: http://localhost:8080\n    models: []\n", ["peers.box.models", "can not be empty"]),
])
def test_a_peer_needs_a_proxy_url_and_models(check_config, peer, words) -> None:
    """follows internal/config TestPeerConfig_UnmarshalYAML"""
    checked = check_config(f"peers:\n  box:\n    {peer}")
    assert checked.ok is (words is None), checked.errors
    for word in words or []:
        assert word in checked.errors


@pytest_twisted.ensureDeferred
async def test_a_peer_proxy_path_prefixes_every_request(llamaswap, echo_peer) -> None:
    """follows internal/config TestPeerConfig_ProxyURL"""
    swapper = await llamaswap(f"peers:\n  box:\n    proxy: {echo_peer.url}/api\n"
                              "    apiKey: sk-test\n    models: [model_a]\n")
    path, _ = _sent(await body_json(await swapper.chat("model_a")))
    assert path == "/api/v1/chat/completions"
    host = echo_peer.url.removeprefix("http://")
    assert echo_peer.seen[-1]["headers"]["host"] == host
