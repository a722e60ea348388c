"""Tests for the config loader: llama-swap compatible YAML -> ``Config`` or ``ConfigError``.

Plain pytest, no reactor. Every config is written as llama-swap would accept it, unless the
test is about a problem; problem lines are checked for file, key path and message.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamaswap.config import (
    DEFAULT_GROUP,
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from llamaswap.config.cmdline import split_command, split_command_checked, strip_comments
from llamaswap.config.macros import go_format

REPO = Path(__file__).parents[1]
FILE = "config.yaml"


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), FILE, environ or {})


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def one_problem(text: str, environ: dict[str, str] | None = None) -> str:
    found = problems(text, environ)
    assert len(found) == 1, found
    return found[0]


MINIMAL = """
models:
  m:
    cmd: server --port ${PORT}
"""


# --- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    config = parse(MINIMAL)
    assert config.path == FILE
    assert config.health_check_timeout == 120
    assert config.log_level == "info"
    assert config.start_port == 5800
    assert config.global_ttl == 0
    assert config.unload_timeout == 10
    assert config.include_aliases_in_list is False
    assert config.preload == ()
    assert config.warnings == ()
    model = config.models["m"]
    assert model.cmd == ("server", "--port", "5800")
    assert model.port == 5800
    assert model.proxy == "http://localhost:5800"
    assert model.cmd_stop == ""
    assert model.check_endpoint == "/health"
    assert model.aliases == ()
    assert model.env == ()
    assert model.ttl == 0
    assert model.unload_timeout == 10
    assert model.unlisted is False
    assert model.use_model_name == ""
    assert model.concurrency_limit == 10
    assert model.name == "" and model.description == ""
    assert dict(model.metadata) == {}
    assert list(config.groups) == [DEFAULT_GROUP]
    group = config.groups[DEFAULT_GROUP]
    assert (group.members, group.swap, group.exclusive, group.persistent) == (
        ("m",), True, True, False)


def test_every_model_field_is_read() -> None:
    config = parse("""
        healthCheckTimeout: 300
        logLevel: debug
        startPort: 9000
        globalTTL: 60
        unloadTimeout: 20
        includeAliasesInList: true
        models:
          m:
            cmd: srv
            cmdStop: kill -TERM ${PID}
            proxy: http://127.0.0.1:8081/base
            aliases: [a1, a2]
            env: ["A=1", "B=x=y", "C="]
            checkEndpoint: /ready
            ttl: 30
            unloadTimeout: 3
            unlisted: true
            useModelName: upstream-name
            concurrencyLimit: 2
            name: Nice Name
            description: what it is
            metadata: {family: llama, size: 7}
    """)
    assert config.health_check_timeout == 300
    assert config.log_level == "debug"
    assert config.start_port == 9000
    assert config.global_ttl == 60
    assert config.unload_timeout == 20
    assert config.include_aliases_in_list is True
    model = config.models["m"]
    assert model.cmd == ("srv",)
    assert model.cmd_stop == "kill -TERM ${PID}"
    assert model.proxy == "http://127.0.0.1:8081/base"
    assert model.port is None
    assert model.aliases == ("a1", "a2")
    assert model.env == (("A", "1"), ("B", "x=y"), ("C", ""))
    assert model.check_endpoint == "/ready"
    assert (model.ttl, model.unload_timeout, model.concurrency_limit) == (30, 3, 2)
    assert model.unlisted is True
    assert model.use_model_name == "upstream-name"
    assert (model.name, model.description) == ("Nice Name", "what it is")
    assert dict(model.metadata) == {"family": "llama", "size": 7}
    assert config.resolve("a2") == "m"


@pytest.mark.parametrize(("value", "expected"), [(5, 15), (-3, 15), (15, 15), (200, 200)])
def test_health_check_timeout_has_a_floor_of_15(value: int, expected: float) -> None:
    assert parse(f"healthCheckTimeout: {value}\n" + MINIMAL).health_check_timeout == expected


def test_log_level_is_case_insensitive_and_unknown_means_info() -> None:
    assert parse("logLevel: ' WARN '\n" + MINIMAL).log_level == "warn"
    config = parse("logLevel: verbose\n" + MINIMAL)
    assert config.log_level == "info"
    assert config.warnings == (
        "config.yaml: logLevel: unknown log level 'verbose' (valid: debug, info, warn, error); "
        "using info",)


def test_ttl_defaults_to_global_ttl_but_zero_stays_zero() -> None:
    config = parse("""
        globalTTL: 300
        models:
          default: {cmd: a, proxy: "http://h:1"}
          minus-one: {cmd: a, proxy: "http://h:1", ttl: -1}
          never: {cmd: a, proxy: "http://h:1", ttl: 0}
          own: {cmd: a, proxy: "http://h:1", ttl: 5}
    """)
    ttls = {mid: m.ttl for mid, m in config.models.items()}
    assert ttls == {"default": 300, "minus-one": 300, "never": 0, "own": 5}


def test_unload_timeout_and_concurrency_zero_mean_default() -> None:
    config = parse("""
        unloadTimeout: 0
        models:
          a: {cmd: a, proxy: "http://h:1", unloadTimeout: 0, concurrencyLimit: 0}
          b: {cmd: a, proxy: "http://h:1", unloadTimeout: 4, concurrencyLimit: 1}
    """)
    assert config.unload_timeout == 10
    assert (config.models["a"].unload_timeout, config.models["a"].concurrency_limit) == (10, 10)
    assert (config.models["b"].unload_timeout, config.models["b"].concurrency_limit) == (4, 1)
    inherited = parse("unloadTimeout: 25\n" + MINIMAL)
    assert inherited.models["m"].unload_timeout == 25


@pytest.mark.parametrize(("value", "expected"), [
    ("none", None), (" none ", None), ("/v1/models", "/v1/models"), ("health", "/health"),
])
def test_check_endpoint(value: str, expected: str | None) -> None:
    config = parse(f"""
        models:
          m:
            cmd: srv --port ${{PORT}}
            checkEndpoint: "{value}"
    """)
    assert config.models["m"].check_endpoint == expected


def test_cmd_stop_keeps_pid_and_loses_comment_lines() -> None:
    config = parse("""
        models:
          m:
            cmd: srv --port ${PORT}
            cmdStop: |
              # graceful: ${NOT_A_MACRO}
              docker stop ${MODEL_ID}-${PID}
    """)
    assert config.models["m"].cmd_stop.strip() == "docker stop m-${PID}"
    assert split_command(config.models["m"].cmd_stop) == ["docker", "stop", "m-${PID}"]


def test_empty_file_is_an_empty_config_with_a_warning() -> None:
    config = parse("# nothing yet\n")
    assert dict(config.models) == {} and dict(config.groups) == {}
    assert config.warnings == ("config.yaml: models: no models are defined",)


# --- validation errors ---------------------------------------------------------------------


@pytest.mark.parametrize(("snippet", "expected"), [
    ("startPort: 0", "config.yaml: startPort: startPort must be greater than 1"),
    ("startPort: 70000", "config.yaml: startPort: startPort must be at most 65535"),
    ("globalTTL: -1", "config.yaml: globalTTL: globalTTL must be >= 0"),
    ("unloadTimeout: -1", "config.yaml: unloadTimeout: unloadTimeout must be >= 0"),
])
def test_top_level_range_errors(snippet: str, expected: str) -> None:
    text = f"{snippet}\nmodels:\n  m:\n    cmd: srv\n    proxy: http://h:1\n"
    assert one_problem(text) == expected


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("ttl", -5, "config.yaml: models.llama.ttl: invalid TTL value -5"),
    ("unloadTimeout", -3,
     "config.yaml: models.llama.unloadTimeout: invalid unloadTimeout value -3"),
    ("concurrencyLimit", -1,
     "config.yaml: models.llama.concurrencyLimit: invalid concurrencyLimit value -1"),
])
def test_model_range_errors(field: str, value: int, expected: str) -> None:
    assert one_problem(f"""
        models:
          llama:
            cmd: srv --port ${{PORT}}
            {field}: {value}
    """) == expected


@pytest.mark.parametrize(("snippet", "expected"), [
    ("ttl: abc", "config.yaml: models.llama.ttl: must be a number of seconds, got 'abc'"),
    ("ttl: [1]", "config.yaml: models.llama.ttl: must be a number of seconds, got a list"),
    ("concurrencyLimit: 1.5",
     "config.yaml: models.llama.concurrencyLimit: must be an integer, got 1.5"),
    ("aliases: 5", "config.yaml: models.llama.aliases: must be a list of strings, got 5"),
    ("aliases: [{a: 1}]", "config.yaml: models.llama.aliases[0]: must be a string, got a mapping"),
    ("unlisted: maybe", "config.yaml: models.llama.unlisted: must be true or false, got 'maybe'"),
    ("metadata: [1, 2]", "config.yaml: models.llama.metadata: must be a mapping, got a list"),
    ("env: {A: 1}", "config.yaml: models.llama.env: must be a list of strings, got a mapping"),
    ("name: {a: b}", "config.yaml: models.llama.name: must be a string, got a mapping"),
])
def test_model_type_errors_name_the_key_path(snippet: str, expected: str) -> None:
    assert one_problem(f"""
        models:
          llama:
            cmd: srv --port ${{PORT}}
            {snippet}
    """) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("models: []", "config.yaml: models: must be a mapping of model id to settings, got a list"),
    ("models:\n  m: just a string",
     "config.yaml: models.m: must be a mapping of model settings, got 'just a string'"),
    ("- a\n- b", "config.yaml: the top level must be a mapping of settings, got a list"),
    ("just text", "config.yaml: the top level must be a mapping of settings, got 'just text'"),
    ("healthCheckTimeout: soon\n" + MINIMAL,
     "config.yaml: healthCheckTimeout: must be a number of seconds, got 'soon'"),
    ("startPort: '6000'\n" + MINIMAL, "config.yaml: startPort: must be an integer, got '6000'"),
    ("hooks: [a]\n" + MINIMAL, "config.yaml: hooks: must be a mapping, got a list"),
    ("includeAliasesInList: 2\n" + MINIMAL,
     "config.yaml: includeAliasesInList: must be true or false, got 2"),
])
def test_top_level_type_errors(text: str, expected: str) -> None:
    assert one_problem(text) == expected


def test_yaml_v3_bool_spellings_are_accepted_for_bool_fields() -> None:
    config = parse("""
        models:
          m: {cmd: srv, proxy: "http://h:1", unlisted: yes}
    """)
    assert config.models["m"].unlisted is True


def test_cmd_is_required_and_must_not_be_empty() -> None:
    found = problems("""
        models:
          nocmd:
            proxy: http://h:1
          blank:
            cmd: |
              # only a comment

            proxy: http://h:1
          nothing:
    """)
    assert found == [
        "config.yaml: models.nocmd.cmd: cmd is required",
        "config.yaml: models.blank.cmd: empty command",
        "config.yaml: models.nothing.cmd: cmd is required",
    ]


@pytest.mark.parametrize(("proxy", "why"), [
    ("ftp://h:1", "the scheme must be http or https"),
    ("localhost:8080", "the scheme must be http or https"),
    ("http://", "it has no host"),
    ("http://h:99999", "Port out of range 0-65535"),
])
def test_proxy_must_be_an_http_url_with_a_host(proxy: str, why: str) -> None:
    found = one_problem(f"""
        models:
          m:
            cmd: srv
            proxy: "{proxy}"
    """)
    assert found.startswith(f"config.yaml: models.m.proxy: invalid proxy URL '{proxy}': ")
    assert why in found


def test_proxy_uses_port_but_cmd_does_not() -> None:
    assert one_problem("""
        models:
          m:
            cmd: srv --port 9000
    """) == ("config.yaml: models.m.proxy: proxy uses ${PORT} but cmd does not - "
             "${PORT} is only available when used in cmd")


def test_aliases_must_be_globally_unique() -> None:
    found = problems("""
        models:
          a: {cmd: srv, proxy: "http://h:1", aliases: [shared, a-only]}
          b: {cmd: srv, proxy: "http://h:2", aliases: [shared, a, b]}
    """)
    assert found == [
        "config.yaml: models.b.aliases[0]: duplicate alias shared found in model: b",
        "config.yaml: models.b.aliases[1]: alias a conflicts with an existing model ID",
    ]
    with pytest.raises(ConfigError) as info:
        parse("""
            models:
              a: {cmd: srv, proxy: "http://h:1", aliases: [x, x]}
        """)
    assert info.value.problems == [
        "config.yaml: models.a.aliases[1]: duplicate alias x found in model: a"]


def test_alias_equal_to_own_id_is_dropped_with_a_warning() -> None:
    config = parse("""
        models:
          a: {cmd: srv, proxy: "http://h:1", aliases: [a, alpha]}
    """)
    assert config.models["a"].aliases == ("alpha",)
    assert config.warnings == (
        "config.yaml: models.a.aliases[0]: alias a is the model's own id; ignored",)


def test_env_entries_must_be_name_equals_value() -> None:
    found = problems("""
        models:
          m:
            cmd: srv --port ${PORT}
            env: ["GOOD=1", "NOEQUALS", "1BAD=x", "WITH SPACE=y"]
    """)
    assert found == [
        "config.yaml: models.m.env[1]: env entry 'NOEQUALS' must look like NAME=value",
        "config.yaml: models.m.env[2]: invalid environment variable name '1BAD'",
        "config.yaml: models.m.env[3]: invalid environment variable name 'WITH SPACE'",
    ]


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        parse("""
            startPort: 0
            globalTTL: -2
            macros:
              PORT: 1
            models:
              a:
                cmd: srv --port ${PORT}
                ttl: -5
                aliases: [x]
              b:
                cmd: srv ${undefined}
                proxy: gopher://h
                aliases: [x]
                comd: oops
            groups:
              g:
                members: [a, ghost]
        """)
    error = info.value
    assert error.problems == [
        "config.yaml: macros.PORT: macro name 'PORT' is reserved",
        "config.yaml: models.b.cmd: unknown macro '${undefined}' found in b.cmd",
        "config.yaml: startPort: startPort must be greater than 1",
        "config.yaml: globalTTL: globalTTL must be >= 0",
        "config.yaml: models.a.ttl: invalid TTL value -5",
        "config.yaml: models.b.proxy: invalid proxy URL 'gopher://h': "
        "the scheme must be http or https",
        "config.yaml: models.b.aliases[0]: duplicate alias x found in model: b",
        'config.yaml: groups.g.members[1]: no model config for "ghost"',
    ]
    # The warnings travel with the error: a misspelt key often explains an error.
    assert error.warnings == (
        "config.yaml: models.b.comd: unknown key, ignored (did you mean 'cmd'?)",)
    assert str(error).splitlines()[0] == error.problems[0]
    assert str(error).splitlines()[-1] == "warning: " + error.warnings[0]


# --- macros --------------------------------------------------------------------------------


def test_macros_substitute_last_declared_first() -> None:
    config = parse("""
        macros:
          base: /models
          path: ${base}/llama
          full: ${path}/model.gguf
        models:
          m:
            cmd: load ${full} --port ${PORT}
    """)
    assert config.models["m"].cmd == ("load", "/models/llama/model.gguf", "--port", "5800")


def test_forward_reference_is_an_unknown_macro() -> None:
    assert one_problem("""
        macros:
          FIRST: ${SECOND}
          SECOND: x
        models:
          m:
            cmd: run ${FIRST} --port ${PORT}
    """) == "config.yaml: models.m.cmd: unknown macro '${SECOND}' found in m.cmd"


def test_typed_substitution_keeps_the_macro_type() -> None:
    config = parse("""
        macros:
          port0: 7000
          ttl: 45
          flag: true
          ratio: 0.5
          word: on
        startPort: ${port0}
        models:
          m:
            cmd: srv --port ${PORT} --ratio ${ratio} --flag ${flag} --word ${word}
            ttl: ${ttl}
            metadata:
              port: ${PORT}
              flag: ${flag}
              ratio: ${ratio}
              text: "ratio=${ratio} flag=${flag}"
              nested: {list: ["${MODEL_ID}", "${ttl}", "${ttl}s"]}
    """)
    model = config.models["m"]
    assert config.start_port == 7000
    assert model.ttl == 45
    assert model.cmd == ("srv", "--port", "7000", "--ratio", "0.5", "--flag", "true",
                         "--word", "on")
    assert model.metadata == {
        "port": 7000, "flag": True, "ratio": 0.5, "text": "ratio=0.5 flag=true",
        "nested": {"list": ["m", 45, "45s"]},
    }


def test_map_keys_are_not_substituted() -> None:
    config = parse("""
        macros:
          k: value
        models:
          m:
            cmd: srv --port ${PORT}
            metadata: {"${k}": "${k}"}
    """)
    assert config.models["m"].metadata == {"${k}": "value"}


def test_model_macro_overrides_global_in_place_and_does_not_leak() -> None:
    config = parse("""
        macros:
          tag: global
          msg: value-${tag}
        models:
          a:
            macros:
              tag: model-level
            cmd: echo ${msg} --port ${PORT}
          b:
            cmd: echo ${msg} --port ${PORT}
    """)
    assert config.models["a"].cmd[:2] == ("echo", "value-model-level")
    assert config.models["b"].cmd[:2] == ("echo", "value-global")


def test_model_macro_may_use_globals_and_model_id() -> None:
    config = parse("""
        macros:
          podman: podman run --name ${MODEL_ID}
        models:
          my-model:
            macros:
              image: ghcr.io/ggml-org/llama.cpp:${MODEL_ID}
            cmd: ${podman} ${image} --port ${PORT}
            name: "Model: ${MODEL_ID}"
            aliases: ["${MODEL_ID}-alias"]
    """)
    model = config.models["my-model"]
    assert model.cmd == ("podman", "run", "--name", "my-model",
                         "ghcr.io/ggml-org/llama.cpp:my-model", "--port", "5800")
    assert model.name == "Model: my-model"
    assert model.aliases == ("my-model-alias",)


def test_port_is_allocated_in_sorted_model_id_order_only_for_cmd_users() -> None:
    config = parse("""
        startPort: 6000
        models:
          zeta: {cmd: "srv --port ${PORT}"}
          alpha: {cmd: "srv --port ${PORT}", aliases: ["alpha-${PORT}"]}
          fixed: {cmd: "srv --port 1234", proxy: "http://127.0.0.1:1234"}
          beta:
            cmd: srv --port ${PORT}
            proxy: http://127.0.0.1:${PORT}/v1
            checkEndpoint: /health?port=${PORT}
    """)
    ports = {mid: m.port for mid, m in config.models.items()}
    assert ports == {"zeta": 6002, "alpha": 6000, "fixed": None, "beta": 6001}
    assert config.models["beta"].proxy == "http://127.0.0.1:6001/v1"
    assert config.models["beta"].check_endpoint == "/health?port=6001"
    assert config.models["alpha"].aliases == ("alpha-6000",)
    assert list(config.models) == ["zeta", "alpha", "fixed", "beta"]  # file order kept


def test_port_from_a_macro_counts() -> None:
    config = parse("""
        macros:
          server: llama-server --port ${PORT}
        models:
          m: {cmd: "${server} -m x.gguf"}
    """)
    assert config.models["m"].port == 5800
    assert config.models["m"].proxy == "http://localhost:5800"


def test_port_leftovers_outside_cmd_users() -> None:
    assert one_problem("""
        models:
          m:
            cmd: srv
            proxy: http://h:1
            name: "port ${PORT}"
    """) == ("config.yaml: models.m.name: macro '${PORT}' should have been substituted in "
             "m.name (${PORT} is only available when used in cmd)")


def test_pid_is_only_allowed_in_cmd_stop() -> None:
    config = parse("""
        macros:
          killer: kill -9 ${PID}
        models:
          m:
            cmd: srv --port ${PORT}
            cmdStop: ${killer}
    """)
    assert config.models["m"].cmd_stop == "kill -9 ${PID}"
    assert one_problem("""
        models:
          m:
            cmd: srv --port ${PORT} --parent ${PID}
    """) == ("config.yaml: models.m.cmd: unknown macro '${PID}' found in m.cmd "
             "(${PID} is only available in cmdStop)")


def test_macro_in_a_cmd_comment_is_not_expanded() -> None:
    config = parse("""
        models:
          m:
            cmd: |
              # ${undefined} is fine here
              srv --port ${PORT}
    """)
    assert config.models["m"].cmd == ("srv", "--port", "5800")


@pytest.mark.parametrize(("macros", "expected"), [
    ("PID: 1", "config.yaml: macros.PID: macro name 'PID' is reserved"),
    ("MODEL_ID: x", "config.yaml: macros.MODEL_ID: macro name 'MODEL_ID' is reserved"),
    ("'bad.name': 1", "config.yaml: macros.bad.name: macro name 'bad.name' contains invalid "
                      "characters, must match pattern ^[a-zA-Z0-9_-]+$"),
    (f"{'x' * 64}: 1", f"config.yaml: macros.{'x' * 64}: macro name '{'x' * 64}' exceeds "
                       "maximum length of 63 characters"),
    ("list: [1, 2]", "config.yaml: macros.list: macro 'list' has invalid type list, must be a "
                     "scalar type (string, int, float, or bool)"),
    ("empty:", "config.yaml: macros.empty: macro 'empty' has invalid type null, must be a "
               "scalar type (string, int, float, or bool)"),
    ("recursive: value-${recursive}",
     "config.yaml: macros.recursive: macro 'recursive' contains self-reference"),
])
def test_macro_declaration_errors(macros: str, expected: str) -> None:
    assert one_problem(f"macros:\n  {macros}\n" + MINIMAL) == expected


def test_63_character_macro_name_is_fine() -> None:
    name = "n" * 63
    config = parse(f"macros:\n  {name}: ok\n" + MINIMAL.replace("server", f"server-${{{name}}}"))
    assert config.models["m"].cmd[0] == "server-ok"


def test_model_macro_errors_name_the_model() -> None:
    assert problems("""
        models:
          m:
            macros: [a]
            cmd: srv --port ${PORT}
          n:
            macros: {PORT: 1}
            cmd: srv --port ${PORT}
    """) == [
        "config.yaml: models.m.macros: macros must be a mapping",
        "config.yaml: models.n.macros.PORT: macro name 'PORT' is reserved",
    ]


def test_leftover_macros_name_model_and_field() -> None:
    found = problems("""
        groups:
          g:
            members: ["${nope}"]
        models:
          m:
            cmd: srv --port ${PORT}
            description: about ${what}
            metadata: {a: {b: "${deep}"}}
            env: ["X=${envish}"]
    """)
    assert "config.yaml: groups.g.members[0]: unknown macro '${nope}'" in found
    assert "config.yaml: models.m.description: unknown macro '${what}' found in m.description" \
        in found
    assert "config.yaml: models.m.metadata.a.b: model m metadata: unknown macro '${deep}'" \
        in found
    assert "config.yaml: models.m.env[0]: model m env: unknown macro '${envish}'" in found


# --- environment macros --------------------------------------------------------------------


def test_env_macros_are_substituted_before_parsing() -> None:
    config = parse("""
        macros:
          models: "${env.MODEL_DIR}/gguf"
        models:
          m:
            cmd: srv -m ${models}/a.gguf --port ${PORT}
            aliases: [${env.ALIAS}]
            env: ["HF_TOKEN=${env.TOKEN}"]
    """, {"MODEL_DIR": "/data", "ALIAS": "fast", "TOKEN": "t0k"})
    model = config.models["m"]
    assert model.cmd[:3] == ("srv", "-m", "/data/gguf/a.gguf")
    assert model.aliases == ("fast",)
    assert model.env == (("HF_TOKEN", "t0k"),)


def test_unset_env_macro_names_variable_and_key_path() -> None:
    found = problems("""
        models:
          m:
            cmd: ${env.UNSET_ONE}/server --port ${PORT}
            name: ${env.UNSET_TWO}
    """)
    assert found == [
        "config.yaml: models.m.cmd: environment variable 'UNSET_ONE' is not set",
        "config.yaml: models.m.name: environment variable 'UNSET_TWO' is not set",
    ]


def test_unset_env_macro_in_unparseable_yaml_names_the_line() -> None:
    found = problems("models: {m: [${env.NOPE}\n")
    assert found[0] == "config.yaml: line 1: environment variable 'NOPE' is not set"
    assert found[1].startswith("config.yaml: line ")


def test_env_macro_in_a_yaml_comment_need_not_be_set() -> None:
    config = parse("""
        # cmd: ${env.NOT_SET_ANYWHERE}/server
        models:
          m:
            cmd: srv --port ${PORT}  # ${env.ALSO_NOT_SET}
    """)
    assert config.models["m"].cmd == ("srv", "--port", "5800")


def test_env_values_are_escaped_for_double_quoted_yaml() -> None:
    config = parse("""
        models:
          m:
            cmd: srv --port ${PORT}
            name: "${env.QUOTED}"
            description: "${env.WIN}"
    """, {"QUOTED": 'say "hi"', "WIN": "C:\\models"})
    assert config.models["m"].name == 'say "hi"'
    assert config.models["m"].description == "C:\\models"


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b"])
def test_env_values_with_line_breaks_or_nul_are_rejected(value: str) -> None:
    assert one_problem("""
        models:
          m:
            cmd: srv ${env.BAD} --port ${PORT}
    """, {"BAD": value}) == (
        "config.yaml: models.m.cmd: environment variable 'BAD' contains newlines or null bytes "
        "which are not allowed in YAML substitution")


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMASWAP_TEST_BIN", "/opt/bin/srv")
    config = parse_config("models:\n  m:\n    cmd: ${env.LLAMASWAP_TEST_BIN} --port ${PORT}\n")
    assert config.models["m"].cmd[0] == "/opt/bin/srv"
    assert config.path == "<string>"


# --- cmd sanitising ------------------------------------------------------------------------


def test_split_command_reference_vector() -> None:
    args = split_command("""python model1.py \\
        -a "double quotes" \\
        --arg2 'single quotes'
        -s
        # comment 1
        --arg3 123 \\

          # comment 2
        --arg4 '"string in string"'


        # this will get stripped out as well as the white space above
        -c "'single quoted'"
        """)
    assert args == [
        "python", "model1.py",
        "-a", "double quotes",
        "--arg2", "single quotes",
        "-s",
        "--arg3", "123",
        "--arg4", '"string in string"',
        "-c", "'single quoted'",
    ]


@pytest.mark.parametrize("text", ["", "   \n\t", "# only\n  # comments\n"])
def test_split_command_empty(text: str) -> None:
    with pytest.raises(ValueError, match="^empty command$"):
        split_command(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("a 'b c' d", ["a", "b c", "d"]),
    ('x "" y', ["x", "", "y"]),
    ('echo "a\\$b\\q"', ["echo", "a$b\\q"]),     # in "...", only $ ` " \\ newline are escapes
    ("echo 'a\\b'", ["echo", "a\\b"]),            # nothing is escaped in '...'
    ("echo a\\ b", ["echo", "a b"]),
    ("a | b && c $HOME", ["a", "|", "b", "&&", "c", "$HOME"]),  # no shell
    ("srv --x 1 # not a comment", ["srv", "--x", "1", "#", "not", "a", "comment"]),
    ("a\rb", ["a\rb"]),                            # CR is not a blank in golib's POSIX dialect
])
def test_split_command_posix_rules(text: str, expected: list[str]) -> None:
    assert split_command(text) == expected


def test_unterminated_quote_is_kept_like_llama_swap_but_warned() -> None:
    assert split_command_checked('srv --arg "a b') == (["srv", "--arg", "a b"], True)
    config = parse("""
        models:
          m:
            cmd: srv --port ${PORT} --prompt "unfinished
    """)
    assert config.models["m"].cmd[-1] == "unfinished"
    assert config.warnings == (
        "config.yaml: models.m.cmd: unterminated quote: the rest of the command is one "
        "argument (llama-swap does the same)",)


def test_strip_comments_keeps_other_lines() -> None:
    assert strip_comments("a\n  # b\nc # d") == "a\nc # d"


# --- groups --------------------------------------------------------------------------------

THREE_MODELS = """
models:
  c: {cmd: "srv --port ${PORT}"}
  a: {cmd: "srv --port ${PORT}"}
  b: {cmd: "srv --port ${PORT}"}
"""


def test_default_group_holds_ungrouped_models_in_sorted_order() -> None:
    config = parse(THREE_MODELS)
    assert config.groups[DEFAULT_GROUP].members == ("a", "b", "c")
    config = parse(THREE_MODELS + """
groups:
  pair:
    swap: false
    exclusive: false
    persistent: true
    members: [c, a]
""")
    assert list(config.groups) == ["pair", DEFAULT_GROUP]
    pair = config.groups["pair"]
    assert (pair.members, pair.swap, pair.exclusive, pair.persistent) == (
        ("c", "a"), False, False, True)
    assert config.groups[DEFAULT_GROUP].members == ("b",)
    assert config.group_of("a").id == "pair"


def test_no_default_group_when_every_model_is_grouped() -> None:
    config = parse(THREE_MODELS + "groups:\n  all:\n    members: [a, b, c]\n")
    assert list(config.groups) == ["all"]
    group = config.groups["all"]
    assert (group.swap, group.exclusive, group.persistent) == (True, True, False)


def test_routing_router_settings_groups_is_the_canonical_form() -> None:
    config = parse(THREE_MODELS + """
routing:
  router:
    use: group
    settings:
      groups:
        g: {swap: false, members: [a, b]}
  scheduler:
    use: fifo
""")
    assert config.groups["g"].members == ("a", "b")
    assert config.groups["g"].swap is False
    assert config.groups[DEFAULT_GROUP].members == ("c",)
    assert config.warnings == ()


def test_group_membership_errors() -> None:
    found = problems(THREE_MODELS + """
  d: {cmd: "srv --port ${PORT}", aliases: [dee]}
groups:
  one:
    members: [a, a, ghost, dee]
  two:
    members: [a, b]
""")
    assert found == [
        "config.yaml: groups.one.members: duplicate model member a found in group: one",
        'config.yaml: groups.one.members[2]: no model config for "ghost"',
        'config.yaml: groups.one.members[3]: no model config for "dee" '
        "(dee is an alias of d; groups list model ids)",
        "config.yaml: groups.two.members: model member a is used in multiple groups: one and two",
    ]


@pytest.mark.parametrize(("routing", "expected"), [
    ("groups:\n  g: {members: [a]}\nrouting:\n  router:\n    use: group\n",
     "config.yaml: routing: config uses both the legacy top-level 'matrix'/'groups' keys and "
     "the new 'routing.router' block; please migrate the top-level keys into 'routing.router' "
     "and remove them"),
    ("groups:\n  g: {members: [a]}\nmatrix:\n  sets: {s: a}\n",
     "config.yaml: matrix: config cannot use both 'groups' and 'matrix'"),
    ("routing:\n  router:\n    use: lottery\n",
     'config.yaml: routing.router.use: unknown router "lottery" (valid: group, matrix)'),
    ("routing:\n  router:\n    use: matrix\n",
     "config.yaml: routing.router.use: routing.router.use is 'matrix' but "
     "routing.router.settings.matrix is not set"),
    ("routing:\n  scheduler:\n    use: lifo\n",
     'config.yaml: routing.scheduler.use: unknown scheduler "lifo" (valid: swapaware, fifo)'),
])
def test_routing_errors(routing: str, expected: str) -> None:
    assert one_problem(THREE_MODELS + routing) == expected


def test_reserved_default_group_id_is_ignored_with_a_warning() -> None:
    config = parse(THREE_MODELS + "groups:\n  '(default)': {swap: false, members: [a]}\n")
    assert config.groups[DEFAULT_GROUP].members == ("a", "b", "c")
    assert config.groups[DEFAULT_GROUP].swap is True
    assert config.warnings == (
        "config.yaml: groups.(default): the group id (default) is reserved for models without "
        "a group; this group is ignored (llama-swap replaces it too)",)


# --- preload -------------------------------------------------------------------------------


def test_preload_trims_resolves_aliases_and_warns_about_unknown_ids() -> None:
    config = parse("""
        models:
          a: {cmd: "srv --port ${PORT}", aliases: [alpha]}
          b: {cmd: "srv --port ${PORT}"}
        hooks:
          on_startup:
            preload: [" b ", alpha, "", ghost]
    """)
    assert config.preload == ("b", "a")
    assert config.warnings == (
        'config.yaml: hooks.on_startup.preload[3]: unknown model "ghost"; '
        "it will not be preloaded",)


# --- warnings: unknown and unsupported keys ------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("models:\n  m:\n    cmd: srv\n    proxy: http://h:1\n    tll: 5\n",
     "config.yaml: models.m.tll: unknown key, ignored (did you mean 'ttl'?)"),
    ("models:\n  m:\n    cmd: srv\n    proxy: http://h:1\n    TTL: 5\n",
     "config.yaml: models.m.TTL: unknown key, ignored (did you mean 'ttl'?)"),
    ("healthcheckTimeout: 30\n" + MINIMAL,
     "config.yaml: healthcheckTimeout: unknown key, ignored (did you mean 'healthCheckTimeout'?)"),
    ("frobnicate: 1\n" + MINIMAL, "config.yaml: frobnicate: unknown key, ignored"),
    (THREE_MODELS + "groups:\n  g:\n    members: [a]\n    swapp: false\n",
     "config.yaml: groups.g.swapp: unknown key, ignored (did you mean 'swap'?)"),
    ("hooks:\n  on_start:\n    preload: [m]\n" + MINIMAL,
     "config.yaml: hooks.on_start: unknown key, ignored (did you mean 'on_startup'?)"),
])
def test_unknown_keys_warn_with_suggestions(text: str, expected: str) -> None:
    assert parse(text).warnings == (expected,)


def test_deprecated_top_level_key_warns() -> None:
    config = parse("logRequests: true\n" + MINIMAL)
    assert config.warnings == ("config.yaml: logRequests: deprecated in llama-swap; ignored",)


@pytest.mark.parametrize("snippet", [
    "ui: {activity: {session_id: []}}", "performance: {every: 5s}",
    "upstream: {ignorePaths: ['.*']}"])
def test_llama_swap_top_level_sections_are_read_without_warnings(snippet: str) -> None:
    assert parse(snippet + "\n" + MINIMAL).warnings == ()


@pytest.mark.parametrize("snippet", [
    "capabilities: {in: [text]}", "timeouts: {connect: 5}", "compat: {ignoreWebsockets: true}"])
def test_llama_swap_model_sections_are_read_without_warnings(snippet: str) -> None:
    assert parse(MINIMAL + "    " + snippet + "\n").warnings == ()


def test_a_model_health_check_timeout_has_no_effect_as_in_llama_swap() -> None:
    config = parse(MINIMAL + "    healthCheckTimeout: 30\n")
    assert config.warnings == ("config.yaml: models.m.healthCheckTimeout: has no effect (as in "
                               "llama-swap): the global healthCheckTimeout applies",)


def test_ignored_keys_with_empty_values_do_not_warn() -> None:
    config = parse("apiKeys: []\nsendLoadingState: false\npeers: {}\n" + MINIMAL)
    assert config.warnings == ()


# --- YAML ----------------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    found = one_problem("models:\n  m:\n    cmd: a\n   bad: [\n")
    assert found.startswith("config.yaml: line 4, column ")
    found = one_problem("models:\n  m: {cmd: a\n")
    assert found.startswith("config.yaml: line ")
    assert "while parsing a flow mapping at line 2, column 6" in found


def test_duplicate_keys_are_an_error_like_yaml_v3() -> None:
    found = one_problem("""
        models:
          m: {cmd: "srv --port ${PORT}"}
          m: {cmd: "other --port ${PORT}"}
    """)
    assert found == ("config.yaml: line 4, column 3: mapping key 'm' already defined at line 3 "
                     "(while constructing a mapping at line 3, column 3)")


def test_scalars_resolve_like_yaml_v3() -> None:
    config = parse("""
        macros:
          fa: on
          time: 10:30
          day: 2024-01-02
          hex: 0x10
          octal: 0o17
          legacy-octal: 017
          big: 1_000
          exp: 1e3
        models:
          m:
            cmd: srv --port ${PORT}
            metadata: {fa: "${fa}", time: "${time}", day: "${day}", hex: "${hex}",
                       octal: "${octal}", legacy: "${legacy-octal}", big: "${big}",
                       exp: "${exp}", no: no, y: y}
    """)
    assert config.models["m"].metadata == {
        "fa": "on", "time": "10:30", "day": "2024-01-02", "hex": 16, "octal": 15, "legacy": 15,
        "big": 1000, "exp": 1000.0, "no": "no", "y": "y",
    }


def test_anchors_and_merge_keys_work() -> None:
    config = parse("""
        models:
          base: &base
            cmd: srv --port ${PORT}
            ttl: 60
            aliases: [base-alias]
          derived:
            <<: *base
            aliases: [derived-alias]
    """)
    assert config.models["derived"].ttl == 60
    assert config.models["derived"].aliases == ("derived-alias",)
    assert config.models["derived"].port == 5801


def test_self_containing_anchor_is_an_error() -> None:
    found = one_problem("models: &a\n  m: *a\n")
    assert found.startswith("config.yaml: line 1, column ")
    assert found.endswith("anchor value contains itself")


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    found = one_problem("\n".join(lines) + "\n")
    assert found.endswith("document contains excessive aliasing")


# --- files ---------------------------------------------------------------------------------


def test_load_config_reads_the_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    config = load_config(str(path), environ={})
    assert config.path == str(path)
    assert config.models["m"].port == 5800
    path.write_text("startPort: 0\n" + MINIMAL, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert info.value.problems == [f"{path}: startPort: startPort must be greater than 1"]


def test_load_config_missing_or_undecodable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert info.value.problems == [
        f"{missing}: cannot read the config file: No such file or directory"]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"models: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(binary))
    assert info.value.problems[0].startswith(f"{binary}: the config file is not valid UTF-8")


def test_llama_server_example_config_loads() -> None:
    config = load_config(str(REPO / "config" / "llama-server.yaml"), environ={})
    assert config.warnings == ()
    assert set(config.models) == {"qwen2.5-7b-instruct", "gemma-3-4b-it", "nomic-embed-text"}
    qwen = config.models["qwen2.5-7b-instruct"]
    assert qwen.port == 10003
    assert qwen.proxy == "http://127.0.0.1:10003"
    assert qwen.cmd[:5] == ("/usr/local/bin/llama-server", "--host", "127.0.0.1", "--port",
                            "10003")
    assert "--alias" in qwen.cmd and "qwen2.5-7b-instruct" in qwen.cmd
    assert qwen.metadata == {"context": 16384}
    assert "8192" in config.models["gemma-3-4b-it"].cmd  # model macro override
    assert config.resolve("gpt-4o-mini") == "qwen2.5-7b-instruct"
    assert DEFAULT_GROUP not in config.groups
    assert config.groups["embeddings"].persistent is True
    assert config.preload == ("nomic-embed-text",)
    for model in config.models.values():
        assert model.cmd[model.cmd.index("--host") + 1] == "127.0.0.1"


# --- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (True, "true"), (False, "false"), (7, "7"), (1.0, "1"), (0.5, "0.5"), (100000.0, "100000"),
    (1e6, "1e+06"), (1234567.0, "1.234567e+06"), (0.0001, "0.0001"), (0.00001, "1e-05"),
    (-2.5, "-2.5"), ("s", "s"),
])
def test_go_format_matches_go_percent_v(value: object, expected: str) -> None:
    assert go_format(value) == expected


# --- robustness ----------------------------------------------------------------------------

_KEYS = st.sampled_from([
    "models", "groups", "macros", "cmd", "cmdStop", "proxy", "aliases", "env", "ttl", "members",
    "hooks", "on_startup", "preload", "routing", "router", "settings", "use", "metadata",
    "checkEndpoint", "startPort", "unloadTimeout", "concurrencyLimit", "swap", "matrix", "m",
    "PORT", "name",
]) | st.text(max_size=8)
_SCALARS = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.sampled_from(["${PORT}", "${PID}", "${MODEL_ID}", "${x}", "${env.HOME}",
                               "srv --port ${PORT}", "http://h:1", "none", "a=b", "'\"", ""])
            | st.text(max_size=12))
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=25,
)


def _parse_or_config_error(text: str, environ: dict[str, str]) -> None:
    try:
        result: Any = parse_config(text, FILE, environ)
    except ConfigError as e:
        assert e.problems and all(line.startswith(FILE + ":") for line in e.problems)
    else:
        assert isinstance(result, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(_KEYS, _TREES, max_size=6))
def test_arbitrary_structures_give_config_or_config_error(tree: dict[str, Any]) -> None:
    _parse_or_config_error(yaml.safe_dump(tree, allow_unicode=True), {"HOME": "/root"})


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
       | st.lists(st.sampled_from(["models:", "  m:", "    cmd: ", "${PORT}", "[", "]", "{",
                                   "}", ":", "- ", "&a", "*a", "<<: ", "\n", "  ", "'", '"',
                                   "#", "${env.X}", "!!int", "---"]),
                  max_size=30).map("".join))
def test_arbitrary_text_gives_config_or_config_error(text: str) -> None:
    _parse_or_config_error(text, {"X": "1"})


@pytest.mark.parametrize("text", ["!!int\nmodels:", "!!float [1]", "!!timestamp {a: 1}"])
def test_scalar_tags_on_collections_are_config_errors(text: str) -> None:
    # found by the hypothesis test: a scalar tag on a mapping used to crash the loader
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "x.yaml")
    assert raised.value.problems[0].startswith("x.yaml: line 1, column 1: ")
