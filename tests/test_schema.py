"""config/schema.json stays in step with the loader: same keys, same verdict on examples."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from llamaswap.config import ConfigError, parse_config
from llamaswap.config import keys as loader
from llamaswap.config.yamlv3 import load_yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "config" / "schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
EXAMPLES = sorted((REPO / "config").glob("*.yaml"))


def document(text: str) -> Any:
    """The YAML as the loader reads it (yaml.v3 scalars, as editors' YAML 1.2 servers do)."""
    return load_yaml(text)


def schema_errors(text: str) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in VALIDATOR.iter_errors(document(text))]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_examples_are_found() -> None:
    assert {p.name for p in EXAMPLES} >= {"example.yaml", "llama-server.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_is_valid_for_both(path: Path) -> None:
    text = path.read_text()
    assert schema_errors(text) == []
    config = parse_config(text, str(path), environ={})
    assert not [w for w in config.warnings if "unknown key" in w]


GOOD = {
    "macros in numeric and boolean fields": """
        macros: {idle: 300, yes: true}
        globalTTL: ${idle}
        models:
          m: {cmd: "server --port ${PORT}", ttl: "${idle}", unlisted: "${yes}", env: ["A=1"]}
        """,
    "routing form of groups, yaml.v3 booleans, preload": """
        models:
          a: {cmd: "a --port ${PORT}", checkEndpoint: none, concurrencyLimit: 2}
          b: {cmd: "b", proxy: "http://127.0.0.1:9000", cmdStop: "kill ${PID}"}
        routing:
          router:
            use: group
            settings:
              groups:
                pair: {swap: off, exclusive: false, persistent: yes, members: [a, b]}
        hooks: {on_startup: {preload: [a]}}
        """,
    "empty model list": "models: {}\n",
    "supervision, globally and per model": """
        supervision: {hangTimeout: 30, maxFailures: 3, progressResetsTimeout: true}
        models:
          m: {cmd: "x --port ${PORT}", supervision: {livenessInterval: 10}}
        """,
}

BAD = {
    "models is a list": ("models: [a, b]\n", "models"),
    "model without cmd": ("models:\n  m: {proxy: 'http://h:1'}\n", "models.m"),
    "ttl is text": ("models:\n  m: {cmd: 'x --port ${PORT}', ttl: soon}\n", "models.m.ttl"),
    "negative unloadTimeout": ("unloadTimeout: -1\nmodels: {}\n", "unloadTimeout"),
    "fractional concurrencyLimit": ("models:\n  m: {cmd: 'x ${PORT}', concurrencyLimit: 1.5}\n",
                                    "models.m.concurrencyLimit"),
    "startPort 0": ("startPort: 0\nmodels: {}\n", "startPort"),
    "startPort too large": ("startPort: 70000\nmodels: {}\n", "startPort"),
    "members not a list": ("models:\n  m: {cmd: 'x ${PORT}'}\ngroups:\n  g: {members: m}\n",
                           "groups.g.members"),
    "swap is not a boolean": ("models:\n  m: {cmd: 'x ${PORT}'}\n"
                              "groups:\n  g: {swap: maybe, members: [m]}\n", "groups.g.swap"),
    "env entry without =": ("models:\n  m: {cmd: 'x ${PORT}', env: [JUSTNAME]}\n",
                            "models.m.env.0"),
    "unknown router": ("models: {}\nrouting: {router: {use: round-robin}}\n",
                       "routing.router.use"),
    "unknown scheduler": ("models: {}\nrouting: {scheduler: {use: lifo}}\n",
                          "routing.scheduler.use"),
    "maxFailures 0": ("supervision: {maxFailures: 0}\nmodels: {}\n",
                      "supervision.maxFailures"),
    "selector without targets": ("models:\n  m: {cmd: 'x ${PORT}'}\n"
                                 "selectors:\n  s: {strategy: pin, targets: []}\n",
                                 "selectors.s.targets"),
    "aliases is a mapping": ("models:\n  m: {cmd: 'x ${PORT}', aliases: {a: b}}\n",
                             "models.m.aliases"),
}


@pytest.mark.parametrize("text", GOOD.values(), ids=GOOD.keys())
def test_good_configs_pass_both(text: str) -> None:
    text = textwrap.dedent(text)
    assert schema_errors(text) == []
    parse_config(text, "good.yaml", environ={})


@pytest.mark.parametrize(("text", "where"), BAD.values(), ids=BAD.keys())
def test_bad_configs_fail_both_at_the_same_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "bad.yaml", environ={})
    assert any(where.split(".")[0] in line for line in raised.value.problems)
    errors = schema_errors(text)
    assert errors, "the schema accepts a config the loader rejects"
    assert any(e.startswith(where) or e.startswith(where.rpartition(".")[0] + ":")
               for e in errors), errors


def _properties(node: dict[str, Any]) -> set[str]:
    return set(node["properties"])


def _schema_node(*path: str) -> dict[str, Any]:
    node = SCHEMA
    for step in path:
        node = node[step]
    return node


def _ignored(node: dict[str, Any]) -> set[str]:
    """Keys the schema marks ``deprecated``: those the loader warns about and ignores."""
    return {key for key, value in node["properties"].items() if value.get("deprecated")}


def test_top_level_keys_match_the_loader() -> None:
    assert _properties(SCHEMA) == set(loader.TOP_KEYS) | set(loader._TOP_UNSUPPORTED)
    assert _ignored(SCHEMA) == set(loader._TOP_UNSUPPORTED)


def test_model_keys_match_the_loader() -> None:
    model = _schema_node("properties", "models", "additionalProperties")
    assert _properties(model) == set(loader.MODEL_KEYS) | set(loader._MODEL_UNSUPPORTED)
    assert _ignored(model) == set(loader._MODEL_UNSUPPORTED)


def test_group_keys_match_the_loader() -> None:
    group = _schema_node("properties", "groups", "additionalProperties")
    assert _properties(group) == set(loader._GROUP_KEYS)


@pytest.mark.parametrize(("path", "loader_keys"), [
    (("properties", "peers", "additionalProperties"), "_PEER_KEYS"),
    (("properties", "models", "additionalProperties", "properties", "filters"), "_FILTER_KEYS"),
    (("properties", "selectors", "additionalProperties"), "_SELECTOR_KEYS"),
])
def test_nested_keys_match_the_loader(path: tuple[str, ...], loader_keys: str) -> None:
    assert _properties(_schema_node(*path)) == set(getattr(loader, loader_keys))


def test_supervision_keys_match_the_loader() -> None:
    from llamaswap import supervision
    assert _properties(SCHEMA["$defs"]["supervision"]) == set(supervision._KEYS)


def test_a_misspelt_key_is_flagged_like_the_loader_warns() -> None:
    text = "models:\n  m: {cmd: 'x ${PORT}', tll: 5}\n"
    assert any("tll" in w for w in parse_config(text, "c.yaml", environ={}).warnings)
    assert any("'tll' was unexpected" in e for e in schema_errors(text))
