"""The shipped JSON Schema: valid, shipped in the package, and the loader's structural check."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from llamaswap.config import ConfigError, parse_config
from llamaswap.config.structure import SCHEMA, check_structure
from llamaswap.config.yamlv3 import load_yaml

REPO = Path(__file__).resolve().parents[1]
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


def test_editors_path_is_the_schema_the_package_ships() -> None:
    """config/schema.json (where editors are pointed) is the file inside the package."""
    shipped = REPO / "llamaswap" / "config" / "schema.json"
    assert (REPO / "config" / "schema.json").resolve() == shipped.resolve()
    assert json.loads(shipped.read_text()) == SCHEMA


def _numeric_nodes(node: object, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        kinds = node.get("type")
        kinds = [kinds] if isinstance(kinds, str) else kinds or []
        if {"number", "integer"} & set(kinds):
            found.append((path, node))
        for key, child in node.items():
            found += _numeric_nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _numeric_nodes(child, f"{path}/{index}")
    return found


def test_every_number_in_the_schema_has_a_range() -> None:
    """A number without bounds would let 10**300 through to the code that uses it."""
    nodes = [(path, node) for path, node in _numeric_nodes(SCHEMA)
             if path != "/$defs/scalar" and "pins" not in path]  # read as text, not numbers
    assert len(nodes) > 25
    unbounded = [path for path, node in nodes if "minimum" not in node or "maximum" not in node]
    assert unbounded == []


def _ignored_keys(node: object, path: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for key, child in node.get("properties", {}).items():
            if isinstance(child, dict) and "x-ignored" in child:
                assert child.get("deprecated") is True, "editors should show it as unused"
                found[f"{path}.{key}".lstrip(".")] = child["x-ignored"]
        for key, child in node.items():
            step = "" if key in ("properties", "additionalProperties", "$defs") else key
            found |= _ignored_keys(child, f"{path}.{step}".rstrip(".") if step else path)
    return found


def test_ignored_keys_warn_with_the_schemas_words() -> None:
    """Marking a key x-ignored in the schema is all it takes to warn about it."""
    ignored = _ignored_keys(SCHEMA)
    assert set(ignored) == {"logRequests", "models.healthCheckTimeout"}
    assert not any("not supported yet" in text for text in ignored.values())
    config = parse_config(textwrap.dedent("""
        logRequests: true
        models:
          m: {cmd: "x --port ${PORT}", healthCheckTimeout: 30}
        """), "c.yaml", environ={})
    assert config.warnings == (
        f"c.yaml: logRequests: {ignored['logRequests']}",
        f"c.yaml: models.m.healthCheckTimeout: {ignored['models.healthCheckTimeout']}",
    )


def test_the_schema_reports_what_no_decoder_checks() -> None:
    """All problems at once: the decoder's own and the schema's, each with its key path."""
    with pytest.raises(ConfigError) as raised:
        parse_config(textwrap.dedent("""
            captureBuffer: 100000
            routing:
              scheduler: {settings: {swapaware: {priority: {m: 5000000}}}}
            models:
              m: {cmd: "x --port ${PORT}", ttl: -5}
            """), "c.yaml", environ={})
    assert raised.value.problems == [
        "c.yaml: models.m.ttl: invalid TTL value -5",
        "c.yaml: captureBuffer: must be <= 65536, got 100000",
        "c.yaml: routing.scheduler.settings.swapaware.priority.m: must be <= 1000000, "
        "got 5000000",
    ]


def test_a_key_checked_by_both_is_reported_once_in_the_loaders_words() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("startPort: 70000\nmodels: {}\n", "c.yaml", environ={})
    assert raised.value.problems == ["c.yaml: startPort: startPort must be at most 65535"]


def test_schema_findings_never_quote_an_api_key() -> None:
    findings = check_structure({"apiKeys": [{"key": "s3cret value", "scope": "all"}, 12345],
                                "peers": {"p": {"proxy": "http://h:1", "models": ["a"],
                                                "apiKey": ["s3cret"]}}})
    assert findings, "the schema should object to all three"
    assert not [f for f in findings if "s3cret" in f.message or "12345" in f.message]
    assert {f.path for f in findings} >= {"apiKeys[0]", "apiKeys[1]", "peers.p.apiKey"}


def test_findings_come_in_file_order_one_line_each() -> None:
    findings = check_structure(load_yaml(textwrap.dedent("""
        zzz: 1
        models:
          m: {cmd: x, tll: 5, concurrencyLimit: -1}
        aaa: 2
        """)))
    assert [(f.path, f.warning) for f in findings] == [
        ("zzz", True), ("models.m.tll", True), ("models.m.concurrencyLimit", False),
        ("aaa", True)]
    assert all("\n" not in f.message for f in findings)
