"""llama-swap's ``internal/config`` scenarios, checked through ``llamaswap check-config``.

Each test loads a config the way a user would (the command prints the resolved config as JSON,
or exits 1 with the problems on stderr) and asserts what llama-swap's own test asserts about
the same config. Error wording is llamaswap's own; the tests check that an error names the
offending key or value, not the exact sentence.
"""

from __future__ import annotations

import shlex

import pytest

MODEL = "cmd: server --port ${PORT}"


def test_group_member_in_two_groups_is_rejected(check_config) -> None:
    """follows internal/config TestConfig_GroupMemberIsUnique"""
    checked = check_config("""
models:
  model1: {cmd: "svr --port ${PORT}"}
  model2: {cmd: "svr --port ${PORT}"}
groups:
  group1: {swap: true, exclusive: false, members: [model2]}
  group2: {swap: true, exclusive: false, members: [model2]}
""")
    assert not checked.ok
    assert "model2" in checked.errors


def test_alias_used_by_two_models_is_rejected(check_config) -> None:
    """follows internal/config TestConfig_ModelAliasesAreUnique"""
    checked = check_config("""
models:
  model1: {cmd: "svr --port ${PORT}", aliases: [m1]}
  model2: {cmd: "svr --port ${PORT}", aliases: [m1, m2]}
""")
    assert not checked.ok
    assert "m1" in checked.errors


def test_store_path_must_be_writable_and_not_empty(check_config, tmp_path) -> None:
    """follows internal/config TestConfig_StorePath"""
    assert check_config(f"store:\n  path: {tmp_path / 'swap.db'}\n").ok
    existing = tmp_path / "existing.db"
    existing.write_text("{}")
    assert check_config(f"store:\n  path: {existing}\n").ok
    missing_dir = check_config("store:\n  path: /no/such/dir/llama-swap.db\n")
    assert not missing_dir.ok and "store" in missing_dir.errors
    empty = check_config('store:\n  path: ""\n')
    assert not empty.ok and "store.path" in empty.errors


def test_ports_are_assigned_from_start_port(check_config) -> None:
    """follows internal/config TestConfig_AutomaticPortAssignments"""
    assert check_config("").resolved["startPort"] == 5800
    assert check_config("startPort: 1000").resolved["startPort"] == 1000
    assert not check_config("startPort: abcd").ok
    assert not check_config("startPort: -99").ok
    resolved = check_config("""
startPort: 5800
models:
  model1:
    cmd: svr --port ${PORT}
  model2:
    cmd: svr --port ${PORT}
    proxy: "http://172.11.22.33:${PORT}"
  model3:
    cmd: svr --port 1999
    proxy: "http://1.2.3.4:1999"
""").resolved["models"]
    assert resolved["model1"]["cmd"] == "svr --port 5800"
    assert resolved["model1"]["proxy"] == "http://localhost:5800"
    assert resolved["model2"]["cmd"] == "svr --port 5801"
    assert resolved["model2"]["proxy"] == "http://172.11.22.33:5801"
    assert resolved["model3"]["cmd"] == "svr --port 1999"
    assert resolved["model3"]["proxy"] == "http://1.2.3.4:1999"
    no_port = check_config("models:\n  model1:\n    cmd: svr --port 111\n")
    assert not no_port.ok and "model1" in no_port.errors and "proxy" in no_port.errors


def test_macros_expand_in_cmd_and_cmd_stop_with_model_macros_winning(check_config) -> None:
    """follows internal/config TestConfig_MacroReplacement"""
    model = check_config("""
startPort: 9990
macros:
  svr-path: "path/to/server"
  argOne: "--arg1"
  argTwo: "--arg2"
  autoPort: "--port ${PORT}"
  overriddenByModelMacro: failed
models:
  model1:
    macros:
      overriddenByModelMacro: success
    cmd: |
      ${svr-path} ${argTwo}
      # the automatic ${PORT} is replaced
      ${autoPort}
      ${argOne}
      --arg3 three
      --overridden ${overriddenByModelMacro}
    cmdStop: |
      /path/to/stop.sh --port ${PORT} ${argTwo}
""").resolved["models"]["model1"]
    assert model["cmd"] == ("path/to/server --arg2 --port 9990 --arg1 --arg3 three "
                            "--overridden success")
    assert " ".join(shlex.split(model["cmdStop"])) == "/path/to/stop.sh --port 9990 --arg2"


@pytest.mark.parametrize("yaml_text, names", [
    ('macros:\n  PORT: "1111"\n', ["PORT"]),
    ("macros:\n  MODEL_ID: model1\n", ["MODEL_ID"]),
    ("macros:\n  PID: 1234\n", ["PID"]),
    (f"models:\n  model1:\n    {MODEL}\n    macros:\n      PORT: 1111\n", ["model1", "PORT"]),
    (f"models:\n  model1:\n    {MODEL}\n    macros:\n      MODEL_ID: m\n", ["model1", "MODEL_ID"]),
])
def test_reserved_macro_names_are_rejected(check_config, yaml_text, names) -> None:
    """follows internal/config TestConfig_MacroReservedNames"""
    checked = check_config(yaml_text)
    assert not checked.ok
    for name in names:
        assert name in checked.errors


@pytest.mark.parametrize("field, model_yaml", [
    ("cmd", 'cmd: "${svr-path} --port ${PORT} ${unknownMacro}"'),
    ("cmdStop", 'cmd: "${svr-path} --port ${PORT}"\n    cmdStop: "kill ${unknownMacro}"'),
    ("proxy", 'cmd: "${svr-path} --port ${PORT}"\n    proxy: "http://${unknownMacro}:${PORT}"'),
    ("checkEndpoint", 'cmd: "${svr-path} --port ${PORT}"\n'
                      '    checkEndpoint: "/health/${unknownMacro}"'),
    ("stripParams", 'cmd: "${svr-path} --port ${PORT}"\n'
                    '    filters:\n      stripParams: "model,${unknownMacro}"'),
])
def test_unknown_macro_is_an_error_naming_model_and_field(check_config, field,
                                                          model_yaml) -> None:
    """follows internal/config TestConfig_MacroErrorOnUnknownMacros"""
    checked = check_config(f"""
startPort: 9990
macros:
  svr-path: "path/to/server"
models:
  model1:
    {model_yaml}
""")
    assert not checked.ok
    assert "unknownMacro" in checked.errors
    assert "model1" in checked.errors and field in checked.errors


def test_comment_lines_in_cmd_are_dropped_before_macros_expand(check_config) -> None:
    """follows internal/config TestConfig_MacroInCommentStrippedBeforeExpansion and
    TestStripComments"""
    cmd = check_config("""
startPort: 9990
macros:
  "latest-llama": >
    /user/llama.cpp/build/bin/llama-server
    --port ${PORT}
models:
  "test-model":
    cmd: |
      # ${latest-llama} is a macro that is defined above
      ${latest-llama}
      --model /path/to/model.gguf
      -ngl 99
""").resolved["models"]["test-model"]["cmd"]
    assert cmd == ("/user/llama.cpp/build/bin/llama-server --port 9990 "
                   "--model /path/to/model.gguf -ngl 99")


def test_model_id_macro_is_the_models_own_id(check_config) -> None:
    """follows internal/config TestConfig_MacroModelId"""
    models = check_config("""
startPort: 9000
macros:
  docker-llama: docker run --name ${MODEL_ID} -p ${PORT}:8080 docker_img
  docker-stop: docker stop ${MODEL_ID}
models:
  model1:
    cmd: /path/to/server -p ${PORT} -hf ${MODEL_ID}
  model2:
    cmd: ${docker-llama}
    cmdStop: ${docker-stop}
  author/model:F16:
    cmd: /path/to/server -p ${PORT} -hf ${MODEL_ID}
""").resolved["models"]
    ports = {model_id: model["port"] for model_id, model in models.items()}
    assert models["model1"]["cmd"] == f"/path/to/server -p {ports['model1']} -hf model1"
    assert models["model2"]["cmd"] == (
        f"docker run --name model2 -p {ports['model2']}:8080 docker_img")
    assert models["model2"]["cmdStop"] == "docker stop model2"
    assert models["author/model:F16"]["cmd"] == (
        f"/path/to/server -p {ports['author/model:F16']} -hf author/model:F16")
    assert sorted(ports.values()) == [9000, 9001, 9002]


def test_typed_macros_keep_their_type_in_metadata(check_config) -> None:
    """follows internal/config TestConfig_TypedMacrosInMetadata"""
    meta = check_config("""
startPort: 10000
macros:
  temp: 0.7
  ctx: 16384
  enabled: true
  model_name: "llama model"
models:
  test-model:
    cmd: /path/to/server -p ${PORT}
    metadata:
      port: ${PORT}
      temperature: ${temp}
      context: ${ctx}
      enabled: ${enabled}
      model_name: ${model_name}
      note: "Running on port ${PORT} with temp ${temp} and context ${ctx}"
""").resolved["models"]["test-model"]["metadata"]
    assert meta == {"port": 10000, "temperature": 0.7, "context": 16384, "enabled": True,
                    "model_name": "llama model",
                    "note": "Running on port 10000 with temp 0.7 and context 16384"}


def test_macros_expand_inside_nested_metadata(check_config) -> None:
    """follows internal/config TestConfig_NestedStructuresInMetadata"""
    meta = check_config("""
startPort: 10000
macros:
  temp: 0.7
models:
  test-model:
    cmd: /path/to/server -p ${PORT}
    metadata:
      config:
        port: ${PORT}
        temperature: ${temp}
      tags: ["model:${MODEL_ID}", "port:${PORT}"]
      nested:
        deep:
          value: ${temp}
""").resolved["models"]["test-model"]["metadata"]
    assert meta["config"] == {"port": 10000, "temperature": 0.7}
    assert meta["tags"] == ["model:test-model", "port:10000"]
    assert meta["nested"]["deep"]["value"] == 0.7


def test_model_macro_wins_over_global_in_metadata(check_config) -> None:
    """follows internal/config TestConfig_ModelLevelMacroPrecedenceInMetadata"""
    meta = check_config("""
macros:
  temp: 0.7
  shared: global
models:
  test-model:
    cmd: /path/to/server -p ${PORT}
    macros:
      temp: 0.9
      own: local
    metadata:
      temperature: ${temp}
      global: ${shared}
      local: ${own}
""").resolved["models"]["test-model"]["metadata"]
    assert meta == {"temperature": 0.9, "global": "global", "local": "local"}


def test_unknown_macro_in_metadata_is_rejected(check_config) -> None:
    """follows internal/config TestConfig_UnknownMacroInMetadata"""
    checked = check_config("""
models:
  test-model:
    cmd: /path/to/server -p ${PORT}
    metadata:
      value: "${UNKNOWN_MACRO}"
""")
    assert not checked.ok
    assert "test-model" in checked.errors and "UNKNOWN_MACRO" in checked.errors


@pytest.mark.parametrize("value, ok", [
    ('"a string"', True), ("42", True), ("3.14", True), ("true", True),
    ("[1, 2]", False), ("{key: value}", False),
])
def test_macro_values_must_be_scalars(check_config, value, ok) -> None:
    """follows internal/config TestConfig_InvalidMacroType and TestConfig_MacroTypeValidation"""
    checked = check_config(f"""
macros:
  VALUE: {value}
models:
  test-model:
    cmd: /path/to/server -p ${{PORT}} ${{VALUE}}
""")
    assert checked.ok is ok
    if not ok:
        assert "VALUE" in checked.errors


@pytest.mark.parametrize("keys, index", [
    ('[""]', None), ('["   "]', 0), ('[" key123"]', 0), ('["key123 "]', 0),
    ('["key 123"]', 0), ('["valid-key", "bad key"]', 1), ('["valid-key", "", "other"]', None),
])
def test_empty_or_spaced_api_keys_are_rejected(check_config, keys, index) -> None:
    """follows internal/config TestConfig_APIKeys_Invalid"""
    checked = check_config(f"apiKeys: {keys}\n")
    assert not checked.ok
    assert "apiKeys" in checked.errors
    if index is not None:
        assert f"apiKeys[{index}]" in checked.errors


def test_api_keys_take_env_values_and_a_missing_one_is_an_error(check_config,
                                                                monkeypatch) -> None:
    """follows internal/config TestConfig_APIKeys_EnvMacros"""
    monkeypatch.setenv("COMPAT_API_KEY_1", "key-one")
    monkeypatch.setenv("COMPAT_EMPTY_KEY", "")
    assert check_config('apiKeys: ["${env.COMPAT_API_KEY_1}", "static-key"]\n').ok
    missing = check_config('apiKeys: ["${env.COMPAT_NONEXISTENT_KEY}"]\n')
    assert not missing.ok and "COMPAT_NONEXISTENT_KEY" in missing.errors
    assert not check_config('apiKeys: ["${env.COMPAT_EMPTY_KEY}"]\n').ok


def test_global_ttl_is_every_models_default(check_config) -> None:
    """follows internal/config TestConfig_GlobalTTL"""
    def ttl(global_ttl: str, model_ttl: str) -> object:
        return check_config(f"{global_ttl}\nmodels:\n  model1:\n    {MODEL}\n    {model_ttl}\n"
                            ).resolved["models"]["model1"]["ttl"]

    assert ttl("globalTTL: 300", "") == 300
    assert ttl("globalTTL: 300", "ttl: 0") == 0
    assert ttl("globalTTL: 300", "ttl: 600") == 600
    assert ttl("", "") == 0
    negative = check_config(f"globalTTL: -1\nmodels:\n  model1:\n    {MODEL}\n")
    assert not negative.ok and "globalTTL" in negative.errors


def test_unload_timeout_defaults_and_overrides(check_config) -> None:
    """follows internal/config TestConfig_UnloadTimeout"""
    default = check_config(f"models:\n  model1:\n    {MODEL}\n").resolved
    assert default["unloadTimeout"] == default["models"]["model1"]["unloadTimeout"] == 10
    models = check_config(f"""
unloadTimeout: 25
models:
  model1:
    {MODEL}
    unloadTimeout: 45
  model2:
    {MODEL}
  model3:
    {MODEL}
    unloadTimeout: 0
""").resolved["models"]
    assert [models[m]["unloadTimeout"] for m in ("model1", "model2", "model3")] == [45, 25, 25]
    assert "unloadTimeout" in check_config(
        f"unloadTimeout: -1\nmodels:\n  model1:\n    {MODEL}\n").errors
    negative_model = check_config(f"models:\n  model1:\n    {MODEL}\n    unloadTimeout: -1\n")
    assert not negative_model.ok
    assert "model1" in negative_model.errors and "unloadTimeout" in negative_model.errors


def test_env_macros_fill_model_fields_and_macros(check_config, monkeypatch) -> None:
    """follows internal/config TestConfig_EnvMacros"""
    for name, value in {"COMPAT_MODEL_PATH": "/opt/models", "COMPAT_HOST": "myserver",
                        "COMPAT_PORT": "9999", "COMPAT_BASE": "/usr/local",
                        "COMPAT_DIR": "/models/llama", "COMPAT_SECRET": "secret123",
                        "COMPAT_SIGNAL": "SIGTERM", "COMPAT_USER": "admin",
                        "COMPAT_PASS": "secret"}.items():
        monkeypatch.setenv(name, value)
    models = check_config("""
macros:
  base: "${env.COMPAT_BASE}/bin/server"
models:
  plain:
    cmd: "${env.COMPAT_MODEL_PATH}/llama-server --port ${PORT}"
  fields:
    cmd: "server --host ${env.COMPAT_HOST}"
    proxy: "http://${env.COMPAT_HOST}:${env.COMPAT_PORT}"
    checkEndpoint: "/health/${env.COMPAT_HOST}"
    cmdStop: "kill -${env.COMPAT_SIGNAL} ${PID}"
  macro:
    macros:
      dir: "${env.COMPAT_DIR}"
    cmd: "${base} --port ${PORT} --model ${dir}/model.gguf"
    metadata:
      api_key: "${env.COMPAT_SECRET}"
      nested: {key: "${env.COMPAT_SECRET}"}
  auth:
    cmd: "server --port ${PORT} --auth ${env.COMPAT_USER}:${env.COMPAT_PASS}"
""").resolved["models"]
    assert models["plain"]["cmd"].startswith("/opt/models/llama-server --port ")
    assert models["fields"]["cmd"] == "server --host myserver"
    assert models["fields"]["proxy"] == "http://myserver:9999"
    assert models["fields"]["checkEndpoint"] == "/health/myserver"
    assert "-SIGTERM" in models["fields"]["cmdStop"]
    assert models["macro"]["cmd"].startswith("/usr/local/bin/server --port ")
    assert models["macro"]["cmd"].endswith(" --model /models/llama/model.gguf")
    assert models["macro"]["metadata"] == {"api_key": "secret123",
                                           "nested": {"key": "secret123"}}
    assert models["auth"]["cmd"].endswith("--auth admin:secret")


@pytest.mark.parametrize("where", [
    'cmd: "server --port ${PORT} ${env.COMPAT_UNDEFINED_12345}"',
    'macros:\n      m: "${env.COMPAT_UNDEFINED_12345}"\n    cmd: "server --port ${PORT} ${m}"',
    'cmd: "server --port ${PORT}"\n    metadata:\n      k: "${env.COMPAT_UNDEFINED_12345}"',
])
def test_missing_env_var_is_an_error_naming_it(check_config, where) -> None:
    """follows internal/config TestConfig_EnvMacros (missing env var cases)"""
    checked = check_config(f"models:\n  test:\n    {where}\n")
    assert not checked.ok
    assert "COMPAT_UNDEFINED_12345" in checked.errors


def test_missing_env_var_in_global_macro_is_an_error(check_config) -> None:
    """follows internal/config TestConfig_EnvMacros (missing env var in global macro)"""
    checked = check_config("""
macros:
  root: "${env.COMPAT_UNDEFINED_GLOBAL}"
models:
  test:
    cmd: "server --port ${PORT} ${root}"
""")
    assert not checked.ok and "COMPAT_UNDEFINED_GLOBAL" in checked.errors


@pytest.mark.parametrize("value", ["line1\nline2", "line1\rline2"])
def test_env_value_with_line_break_is_rejected(check_config, monkeypatch, value) -> None:
    """follows internal/config TestConfig_EnvMacros (newline and carriage return cases)"""
    monkeypatch.setenv("COMPAT_MULTILINE", value)
    checked = check_config('models:\n  test:\n    cmd: "server --port ${PORT} '
                           '${env.COMPAT_MULTILINE}"\n')
    assert not checked.ok and "COMPAT_MULTILINE" in checked.errors


def test_peer_api_key_unknown_macro_is_an_error(check_config) -> None:
    """follows internal/config TestConfig_PeerApiKey_EnvMacros (unknown macro, missing env)"""
    unknown = check_config("""
peers:
  openrouter:
    proxy: https://openrouter.ai/api
    apiKey: "${undefined_macro}"
    models: [m]
""")
    assert not unknown.ok and "openrouter" in unknown.errors
    missing = check_config("""
peers:
  openrouter:
    proxy: https://openrouter.ai/api
    apiKey: "${env.COMPAT_NONEXISTENT_PEER_KEY}"
    models: [m]
""")
    assert not missing.ok and "COMPAT_NONEXISTENT_PEER_KEY" in missing.errors


# --- macros inside macros (macro_in_macro_test.go, macro_test.go, macros_refactor_test.go) ---


def _cmd(check_config, yaml_text: str, model: str = "test") -> str:
    checked = check_config(yaml_text)
    assert checked.ok, checked.errors
    return str(checked.resolved["models"][model]["cmd"])


def test_macro_may_use_an_earlier_macro(check_config) -> None:
    """follows internal/config TestConfig_MacroInMacroBasic and TestConfig_MacroInMacroLIFOOrder"""
    assert _cmd(check_config, """
macros:
  "A": "value-A"
  "B": "prefix-${A}-suffix"
models:
  test: {cmd: "echo ${B}", proxy: "http://localhost:8080"}
""") == "echo prefix-value-A-suffix"
    assert _cmd(check_config, """
macros:
  "base": "/models"
  "path": "${base}/llama"
  "full": "${path}/model.gguf"
models:
  test: {cmd: "load ${full}", proxy: "http://localhost:8080"}
""") == "load /models/llama/model.gguf"


def test_model_id_inside_a_global_macro_is_the_using_model(check_config) -> None:
    """follows internal/config TestConfig_ModelIdInGlobalMacro"""
    assert _cmd(check_config, """
macros:
  "podman-llama": "podman run --name ${MODEL_ID} ghcr.io/ggml-org/llama.cpp:server-cuda"
models:
  my-model: {cmd: "${podman-llama} -m model.gguf", proxy: "http://localhost:8080"}
""", "my-model") == ("podman run --name my-model ghcr.io/ggml-org/llama.cpp:server-cuda "
                     "-m model.gguf")


def test_model_macro_overrides_global_inside_global_macro(check_config) -> None:
    """follows internal/config TestConfig_ModelMacroOverridesGlobal"""
    assert _cmd(check_config, """
macros:
  "tag": "global"
  "msg": "value-${tag}"
models:
  test:
    macros: {"tag": "model-level"}
    cmd: echo ${msg}
    proxy: http://localhost:8080
""") == "echo value-model-level"


@pytest.mark.parametrize("macros, follows", [
    ('"recursive": "value-${recursive}"', "TestConfig_SelfReferenceDetection"),
    ('"A": "value-${UNDEFINED}"', "TestConfig_UndefinedMacroReference"),
    ('FIRST: "value-${SECOND}"\n  SECOND: later', "TestConfig_MacroForwardReferenceRejected"),
])
def test_macro_referring_to_itself_an_unknown_or_a_later_macro_is_rejected(
        check_config, macros, follows) -> None:
    """follows internal/config TestConfig_SelfReferenceDetection,
    TestConfig_UndefinedMacroReference and TestConfig_MacroForwardReferenceRejected"""
    used = macros.split(":")[0].strip('"')
    checked = check_config(f"""
macros:
  {macros}
models:
  test: {{cmd: "echo ${{{used}}}", proxy: "http://localhost:8080"}}
""")
    assert not checked.ok, follows


def test_macros_and_model_id_expand_in_name_and_description(check_config) -> None:
    """follows internal/config TestConfig_MacroInNameAndDescription and
    TestConfig_ModelIDInNameAndDescription"""
    models = check_config("""
macros:
  "VARIANT": "Q4_K_M"
  "FAMILY": "llama"
models:
  my-model:
    cmd: echo ok
    proxy: http://localhost:8080
    name: "${FAMILY} ${VARIANT}"
    description: "A ${FAMILY} model in ${VARIANT} format"
  llama-3b:
    cmd: echo ok
    proxy: http://localhost:8081
    name: "Model: ${MODEL_ID}"
    description: "Running ${MODEL_ID}"
""").resolved["models"]
    assert models["my-model"]["name"] == "llama Q4_K_M"
    assert models["my-model"]["description"] == "A llama model in Q4_K_M format"
    assert models["llama-3b"]["name"] == "Model: llama-3b"
    assert models["llama-3b"]["description"] == "Running llama-3b"


def test_unknown_macro_in_name_is_rejected(check_config) -> None:
    """follows internal/config TestConfig_UnknownMacroInNameDescription"""
    checked = check_config("""
models:
  test: {cmd: echo ok, proxy: "http://localhost:8080", name: "Model ${UNDEFINED}"}
""")
    assert not checked.ok and "UNDEFINED" in checked.errors


@pytest.mark.parametrize("name", ["bad.name", "a" * 64])
def test_macro_names_with_bad_characters_or_too_long_are_rejected(check_config, name) -> None:
    """follows internal/config TestConfig_MacroNameValidation"""
    checked = check_config(f"macros:\n  {name}: value\n")
    assert not checked.ok and name in checked.errors


def test_model_macro_is_not_visible_to_other_models(check_config) -> None:
    """follows internal/config TestConfig_ModelMacroDoesNotLeakToOtherModels"""
    checked = check_config("""
models:
  owner: {macros: {LOCAL: owner-value}, cmd: "echo ${LOCAL}", proxy: "http://localhost:8080"}
  other: {cmd: "echo ${LOCAL}", proxy: "http://localhost:8081"}
""")
    assert not checked.ok
    assert "LOCAL" in checked.errors and "other" in checked.errors


def test_model_macros_expand_in_yaml_anchor_copies(check_config) -> None:
    """follows internal/config TestConfig_ModelMacrosExpandMaterializedYAMLAnchors"""
    models = check_config("""
defs:
  model: &model
    cmd: echo ${LOCAL}
    proxy: http://localhost:8080
    env: ["MODEL_VALUE=${LOCAL}"]
    metadata:
      value: "${LOCAL}"
models:
  first:
    <<: *model
    macros: {LOCAL: first-value}
  second:
    <<: *model
    macros: {LOCAL: second-value}
""").resolved["models"]
    for model_id, expected in (("first", "first-value"), ("second", "second-value")):
        assert models[model_id]["cmd"] == f"echo {expected}"
        assert models[model_id]["env"] == [f"MODEL_VALUE={expected}"]
        assert models[model_id]["metadata"] == {"value": expected}


def test_start_port_may_come_from_a_macro(check_config) -> None:
    """follows internal/config TestConfig_MacroResolvedStartPort"""
    resolved = check_config("""
macros:
  FIRST_PORT: 6200
startPort: "${FIRST_PORT}"
models:
  model1: {cmd: "server --port ${PORT}"}
""").resolved
    assert resolved["startPort"] == 6200
    assert resolved["models"]["model1"]["cmd"] == "server --port 6200"
    assert resolved["models"]["model1"]["proxy"] == "http://localhost:6200"


def test_pid_stays_for_stop_time_and_port_expands_in_set_params_by_id(check_config) -> None:
    """follows internal/config TestConfig_RuntimeMacrosIntroducedByRegularMacros"""
    model = check_config("""
macros:
  STOP_COMMAND: kill ${PID}
models:
  model1: {cmd: server, cmdStop: "${STOP_COMMAND}", proxy: "http://localhost:8080"}
""").resolved["models"]["model1"]
    assert model["cmdStop"] == "kill ${PID}"
    aliases = check_config("""
startPort: 6300
models:
  model1:
    cmd: server --port ${PORT}
    filters:
      setParamsByID:
        "model1:${PORT}": {temperature: 0.5}
""").resolved["models"]["model1"]["aliases"]
    assert "model1:6300" in aliases


def test_macros_reach_top_level_numbers_hooks_ttl_and_env(check_config) -> None:
    """follows internal/config TestConfig_MacrosAcrossConfiguration"""
    resolved = check_config("""
macros:
  GLOBAL_TTL: 120
  MODEL_TTL: 45
  MODEL_NAME: model1
globalTTL: "${GLOBAL_TTL}"
hooks:
  on_startup:
    preload: ["${MODEL_NAME}"]
models:
  model1:
    macros: {MODEL_TTL: 30}
    cmd: server --port ${PORT}
    ttl: "${MODEL_TTL}"
    env: ["MODEL=${MODEL_ID}"]
""").resolved
    assert resolved["globalTTL"] == 120
    assert resolved["preload"] == ["model1"]
    assert resolved["models"]["model1"]["ttl"] == 30
    assert resolved["models"]["model1"]["env"] == ["MODEL=model1"]


def test_macro_in_a_metadata_key_stays_literal_and_colliding_ids_fail(check_config) -> None:
    """follows internal/config TestConfig_MacroMapKeyScope"""
    meta = check_config("""
macros: {KEY: expanded}
models:
  model1: {cmd: server, proxy: "http://localhost:8080", metadata: {"${KEY}": value}}
""").resolved["models"]["model1"]["metadata"]
    assert meta == {"${KEY}": "value"}
    expanded = check_config("""
macros: {VARIANT: think}
models:
  model1:
    cmd: server
    proxy: http://localhost:8080
    filters:
      setParamsByID:
        "${MODEL_ID}:${VARIANT}": {temperature: 0.1}
""").resolved["models"]["model1"]["aliases"]
    assert expanded == ["model1:think"]
    colliding = check_config("""
macros: {FIRST: shared, SECOND: shared}
models:
  model1:
    cmd: server
    proxy: http://localhost:8080
    filters:
      setParamsByID:
        "${FIRST}": {temperature: 0.1}
        "${SECOND}": {temperature: 0.2}
""")
    assert not colliding.ok and "setParamsByID" in colliding.errors


def test_port_applies_throughout_its_model_and_pid_only_in_cmd_stop(check_config) -> None:
    """follows internal/config TestConfig_RuntimeMacros"""
    model = check_config("""
startPort: 6100
models:
  model1:
    cmd: server --port ${PORT}
    proxy: http://localhost:${PORT}
    checkEndpoint: /health/${PORT}
    aliases: ["port-${PORT}"]
    metadata: {port: "${PORT}"}
""").resolved["models"]["model1"]
    assert model["cmd"] == "server --port 6100"
    assert model["proxy"] == "http://localhost:6100"
    assert model["checkEndpoint"] == "/health/6100"
    assert model["aliases"] == ["port-6100"]
    assert model["metadata"] == {"port": 6100}
    kept = check_config("models:\n  model1: {cmd: server, cmdStop: 'kill ${PID}', "
                        "proxy: 'http://localhost:8080'}\n")
    assert kept.resolved["models"]["model1"]["cmdStop"] == "kill ${PID}"
    assert not check_config("models:\n  model1: {cmd: 'server ${PID}', "
                            "proxy: 'http://localhost:8080'}\n").ok


# --- routing (config_test.go TestConfig_Routing_*) ---------------------------------------

TWO_MODELS = """
models:
  gemma: {cmd: "server --port ${PORT}"}
  qwen: {cmd: "server --port ${PORT}"}
"""


def test_legacy_top_level_groups_and_router_use_group(check_config) -> None:
    """follows internal/config TestConfig_Routing_LegacyTopLevelGroups and
    TestConfig_Routing_RouterUseGroup"""
    legacy = check_config(TWO_MODELS + "groups:\n  g1:\n    members: [gemma, qwen]\n")
    routed = check_config(TWO_MODELS + """
routing:
  router:
    use: group
    settings:
      groups:
        g1:
          members: [gemma, qwen]
""")
    for checked in (legacy, routed):
        assert checked.resolved["groups"]["g1"]["members"] == ["gemma", "qwen"]


def test_without_groups_every_model_is_in_the_default_swap_group(check_config) -> None:
    """follows internal/config TestConfig_Routing_DefaultsToGroup"""
    groups = check_config(TWO_MODELS).resolved["groups"]
    assert list(groups) == ["(default)"]
    assert groups["(default)"]["swap"] and groups["(default)"]["exclusive"]
    assert sorted(groups["(default)"]["members"]) == ["gemma", "qwen"]


@pytest.mark.parametrize("routing", [
    "matrix:\n  vars: {g: gemma, q: qwen}\n  sets:\n    combo: \"g | q\"\n",
    "routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n"
    "        vars: {g: gemma, q: qwen}\n        sets:\n          combo: \"g | q\"\n",
    "routing:\n  router:\n    use: group\n    settings:\n      groups:\n"
    "        g1: {members: [gemma, qwen]}\n      matrix:\n        sets: {s: gemma}\n",
    "routing:\n  scheduler:\n    settings:\n      fifo:\n        priority: {gemma: 5}\n",
])
def test_accepted_routing_sections(check_config, routing) -> None:
    """follows internal/config TestConfig_Routing_LegacyTopLevelMatrix,
    TestConfig_Routing_RouterUseMatrix, TestConfig_Routing_RouterSettingsBothGroupsAndMatrix and
    TestConfig_Routing_FifoPriorityKnownModel"""
    checked = check_config(TWO_MODELS + routing)
    assert checked.ok, checked.errors


@pytest.mark.parametrize("routing, words", [
    ("groups:\n  g1: {members: [gemma, qwen]}\nrouting:\n  router:\n    use: group\n",
     ["routing"]),
    ("routing:\n  router:\n    use: matrix\n", ["matrix"]),
    ("routing:\n  router:\n    use: bogus\n", ["bogus"]),
    ("routing:\n  scheduler:\n    settings:\n      fifo:\n        priority: {nope: 5}\n",
     ["nope"]),
])
def test_rejected_routing_sections(check_config, routing, words) -> None:
    """follows internal/config TestConfig_Routing_LegacyAndRoutingConflict,
    TestConfig_Routing_RouterUseMatrixWithoutSettings, TestConfig_Routing_UnknownRouter and
    TestConfig_Routing_FifoPriorityUnknownModel"""
    checked = check_config(TWO_MODELS + routing)
    assert not checked.ok
    for word in words:
        assert word in checked.errors


# --- matrix_test.go ----------------------------------------------------------------------------

MATRIX_MODELS = """
models:
  gemma: {cmd: "server --port ${PORT}"}
  qwen: {cmd: "server --port ${PORT}"}
  voxtral: {cmd: "server --port ${PORT}"}
  llama70B: {cmd: "server --port ${PORT}"}
"""


@pytest.mark.parametrize("section", [
    'matrix:\n  vars: {g: gemma, q: qwen, v: voxtral, L: llama70B}\n'
    '  evict_costs: {L: 5}\n  sets:\n    standard: "(g | q) & v"\n    full: "L"\n',
    'matrix:\n  vars: {g: gemma, q: qwen, v: voxtral}\n'
    '  sets:\n    llms: "g | q"\n    with_tts: "+llms & v"\n',
    'matrix:\n  sets:\n    combo: "gemma & voxtral"\n',
    'matrix:\n  vars: {g: gemma}\n  sets:\n    base: "g | qwen"\n    combo: "+base & voxtral"\n',
    'matrix:\n  evict_costs: {gemma: 5}\n  sets:\n    s: gemma\n',
])
def test_valid_matrices_load(check_config, section) -> None:
    """follows internal/config TestValidateMatrix_Basic, TestValidateMatrix_WithRef,
    TestValidateMatrix_DirectAndMixedModelNames and TestValidateMatrix_ConfigMatrixOnly"""
    checked = check_config(MATRIX_MODELS + section)
    assert checked.ok, checked.errors


@pytest.mark.parametrize("section, word", [
    ('matrix:\n  vars: {x: nope}\n  sets:\n    s: x\n', "nope"),
    ('matrix:\n  vars: {g: gemma}\n  evict_costs: {g: 0}\n  sets:\n    s: g\n', "evict"),
    ('matrix:\n  vars: {g: gemma}\n  evict_costs: {g: -1}\n  sets:\n    s: g\n', "evict"),
    ('matrix:\n  vars: {g: gemma}\n  evict_costs: {unknown: 5}\n  sets:\n    s: g\n',
     "unknown"),
    ('matrix:\n  sets:\n    a: "+b"\n    b: "+a"\n', "matrix"),
    ('matrix:\n  sets:\n    a: "+nonexistent"\n', "nonexistent"),
    ('matrix:\n  vars: {g: gemma}\n  sets: {}\n', "matrix"),
    ('matrix:\n  vars: {g: gemma}\n  sets:\n    s: "g & nonexistent"\n', "nonexistent"),
    ('groups:\n  g1: {members: [gemma]}\nmatrix:\n  sets:\n    s: gemma\n', "matrix"),
])
def test_invalid_matrices_are_rejected(check_config, section, word) -> None:
    """follows internal/config TestValidateMatrix_AliasReferencesUnknownModel,
    TestValidateMatrix_EvictCostInvalid, TestValidateMatrix_CycleDetection,
    TestValidateMatrix_UndefinedRefTarget, TestValidateMatrix_NoSets,
    TestValidateMatrix_UnknownMapIDInDSL and TestValidateMatrix_ConfigXOR"""
    checked = check_config(MATRIX_MODELS + section)
    assert not checked.ok
    assert word in checked.errors


# --- model_config_test.go: setParamsByID aliases -----------------------------------------------


def test_set_params_by_id_keys_become_aliases_unless_they_collide(check_config) -> None:
    """follows internal/config TestConfig_SetParamsByIDAutoAlias,
    TestConfig_SetParamsByIDAutoAliasConflictWithModelID and
    TestConfig_SetParamsByIDAutoAliasConflictWithOtherModel"""
    aliases = check_config("""
models:
  qwen:
    cmd: "server --port ${PORT}"
    filters:
      setParamsByID:
        "${MODEL_ID}": {temperature: 0.7}
        "qwen-thinking": {enable_thinking: true}
""").resolved["models"]["qwen"]["aliases"]
    assert aliases == ["qwen-thinking"]
    with_model_id = check_config("""
models:
  qwen:
    cmd: "server --port ${PORT}"
    filters: {setParamsByID: {other: {a: 1}}}
  other: {cmd: "server --port ${PORT}"}
""")
    assert not with_model_id.ok and "other" in with_model_id.errors
    with_alias = check_config("""
models:
  qwen:
    cmd: "server --port ${PORT}"
    filters: {setParamsByID: {taken: {a: 1}}}
  llama: {cmd: "server --port ${PORT}", aliases: [taken]}
""")
    assert not with_alias.ok and "taken" in with_alias.errors


# --- profile_test.go and selectors_test.go -----------------------------------------------------

SELECTOR_MODELS = """
models:
  a: {cmd: "echo ${PORT}", aliases: [alias-a]}
  b: {cmd: "echo ${PORT}"}
peers:
  remote: {proxy: "http://127.0.0.1:9", models: [remote-model]}
"""


@pytest.mark.parametrize("profiles, word", [
    ("profiles:\n  old: [a]\n", "old"),
    ("profiles:\n  empty:\n    pins: {}\n", "empty"),
    ("profiles:\n  bad:\n    pins: {public: missing}\n", "missing"),
    ("profiles:\n  test:\n    pins: {first: a, second: first}\n", "first"),
])
def test_profiles_that_are_malformed_point_nowhere_or_chain_are_rejected(
        check_config, profiles, word) -> None:
    """follows internal/config TestConfig_Profiles_Validation and
    TestConfig_Profiles_DoNotChain"""
    checked = check_config(SELECTOR_MODELS + profiles)
    assert not checked.ok
    assert word in checked.errors


def test_profiles_and_selectors_that_fit_load(check_config) -> None:
    """follows internal/config TestConfig_Profiles_LoadAndResolve,
    TestConfig_Selectors_LoadDefaultsAndFields, TestConfig_Selectors_PeerModelFQN and
    TestConfig_Selectors_ProfileTargetsSelector"""
    checked = check_config(SELECTOR_MODELS + """
groups:
  pool: {swap: false, members: [a, b]}
selectors:
  coding:
    strategy: warm
    targets: [a, b]
    name: Coding Model
  remote-pool:
    strategy: spillover
    targets: [remote/remote-model]
profiles:
  work:
    description: pins a selector
    pins: {public: coding, off: ""}
""")
    assert checked.ok, checked.errors


@pytest.mark.parametrize("selectors, word", [
    ("  public:\n    targets: [a]\n", "strategy"),
    ("  public:\n    strategy: random\n    targets: [a]\n", "random"),
    ("  public:\n    strategy: pin\n", "targets"),
    ("  public:\n    strategy: pin\n    targets: [missing]\n", "missing"),
    ("  first:\n    strategy: pin\n    targets: [a]\n"
     "  second:\n    strategy: pin\n    targets: [first]\n", "first"),
    ("  a:\n    strategy: pin\n    targets: [b]\n", "a"),
    ("  alias-a:\n    strategy: pin\n    targets: [b]\n", "alias-a"),
    ("  public:\n    strategy: warm\n    targets: [remote-model]\n", "remote-model"),
    ("  public:\n    strategy: spillover\n    targets: [a]\n    settings: {spillover: 0}\n",
     "spillover"),
    ("  public:\n    strategy: spillover\n    targets: [a, alias-a]\n", "duplicate"),
])
def test_selectors_that_cannot_work_are_rejected(check_config, selectors, word) -> None:
    """follows internal/config TestConfig_Selectors_Validation"""
    checked = check_config(SELECTOR_MODELS + "selectors:\n" + selectors)
    assert not checked.ok
    assert word in checked.errors


def test_spillover_targets_must_be_able_to_run_together(check_config) -> None:
    """follows internal/config TestConfig_Selectors_SpilloverCoexistence (groups, matrix sets,
    remote and mixed targets; its "matrix symbolic large" case is a deliberate difference,
    replayed in test_go_config_models.py)"""
    selector = "selectors:\n  public:\n    strategy: spillover\n    targets: [a, b]\n"
    assert check_config(SELECTOR_MODELS + "groups:\n  pool: {swap: false, members: [a, b]}\n"
                        + selector).ok
    assert check_config(SELECTOR_MODELS + 'matrix:\n  vars: {A: a, B: b}\n'
                        '  sets:\n    pool: "A & B"\n' + selector).ok
    swapping = check_config(SELECTOR_MODELS + selector)  # a and b share the (default) swap group
    assert not swapping.ok and "public" in swapping.errors
    apart = check_config(SELECTOR_MODELS + 'matrix:\n  vars: {A: a, B: b}\n'
                         '  sets:\n    pool: "A | B"\n' + selector)
    assert not apart.ok
    assert "selectors.public.targets" in apart.errors and "matrix set" in apart.errors
    remote = check_config('peers:\n  remote: {proxy: "http://127.0.0.1:9", models: [x, y]}\n'
                          "selectors:\n  public:\n    strategy: spillover\n"
                          "    targets: [remote/x, remote/y]\n")
    assert remote.ok, remote.errors
    assert check_config(SELECTOR_MODELS + "selectors:\n  public:\n    strategy: spillover\n"
                        "    targets: [a, remote/remote-model]\n").ok


def test_defaults_of_a_minimal_model(check_config) -> None:
    """follows internal/config TestConfig_DefaultValuesPosix"""
    resolved = check_config("models:\n  model1:\n    cmd: path/to/cmd --port ${PORT}\n").resolved
    assert resolved["healthCheckTimeout"] == 120 and resolved["startPort"] == 5800
    model = resolved["models"]["model1"]
    assert model["proxy"] == "http://localhost:5800"
    assert model["checkEndpoint"] == "/health"
    assert model["aliases"] == [] and model["env"] == [] and model["unlisted"] is False
    assert model["ttl"] == 0 and model["concurrencyLimit"] == 10
