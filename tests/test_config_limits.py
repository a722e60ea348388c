"""Hostile configs: huge numbers, exploding macros, ambiguous API keys (issue 14, items 11-14).

Each must give a one-line ``ConfigError`` naming the key, never a traceback, a hang or a
config that silently means something else.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from llamaswap.config import ConfigError, load_config, parse_config
from llamaswap.config.macros import MAX_EXPANDED_CHARS, MAX_EXPANSION_STEPS
from llamaswap.service import LlamaSwapService

FILE = "c.yaml"
MODEL = "models:\n  m:\n    cmd: srv --port ${PORT}\n"
HUGE = "1" + "0" * 300  # a float in yaml.v3 (beyond 64 bits), 1e+300
HUGER = "9" * 400  # beyond float64 too: yaml.v3 keeps it as text


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(textwrap.dedent(text), FILE, environ={})
    return raised.value.problems


def one_line_naming(text: str, key: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    line = found[0]
    assert line.startswith(f"{FILE}: {key}: "), line
    assert "\n" not in line and len(line) < 400, line
    return line


# --- item 11: every number has a range -----------------------------------------------------

TOP_LEVEL = ["healthCheckTimeout", "globalTTL", "unloadTimeout", "startPort", "maxRequestSize",
             "metricsMaxInMemory", "captureBuffer"]
MODEL_KEYS = ["ttl", "unloadTimeout", "concurrencyLimit", "maxQueue"]
NESTED = {
    "supervision.hangTimeout": "supervision: {{hangTimeout: {v}}}\n",
    "supervision.maxFailures": "supervision: {{maxFailures: {v}}}\n",
    "store.maxRows": "store: {{maxRows: {v}}}\n",
    "routing.scheduler.queueTimeout": "routing: {{scheduler: {{queueTimeout: {v}}}}}\n",
    "routing.scheduler.maxQueue": "routing: {{scheduler: {{maxQueue: {v}}}}}\n",
    "routing.scheduler.settings.swapaware.holdTime":
        "routing: {{scheduler: {{settings: {{swapaware: {{holdTime: {v}}}}}}}}}\n",
    "resources.vram": "resources: {{vram: {v}}}\n",
    "peers.p.timeouts.connect":
        "peers: {{p: {{proxy: 'http://h:1', models: [a], timeouts: {{connect: {v}}}}}}}\n",
}


@pytest.mark.parametrize("value", [HUGE, HUGER, "-" + HUGE, "1e400"])
@pytest.mark.parametrize("key", TOP_LEVEL)
def test_top_level_numbers_out_of_range(key: str, value: str) -> None:
    one_line_naming(f"{key}: {value}\n{MODEL}", key)


@pytest.mark.parametrize("value", [HUGE, HUGER, "-" + HUGE])
@pytest.mark.parametrize("key", MODEL_KEYS)
def test_model_numbers_out_of_range(key: str, value: str) -> None:
    one_line_naming(f"{MODEL}    {key}: {value}\n", f"models.m.{key}")


@pytest.mark.parametrize("value", [HUGE, HUGER, "-" + HUGE])
@pytest.mark.parametrize("key", NESTED)
def test_nested_numbers_out_of_range(key: str, value: str) -> None:
    one_line_naming(NESTED[key].format(v=value) + MODEL, key)


@pytest.mark.parametrize(("snippet", "expected"), [
    ("concurrencyLimit: 100001", "models.m.concurrencyLimit: must be <= 100000, got 100001"),
    ("ttl: 31536001", "models.m.ttl: must be <= 31536000, got 31536001"),
    ("maxQueue: 18446744073709551615",
     "models.m.maxQueue: must be <= 1000000, got 18446744073709551615"),
])
def test_a_number_just_past_its_range_is_named_with_the_limit(snippet: str,
                                                               expected: str) -> None:
    assert problems(f"{MODEL}    {snippet}\n") == [f"{FILE}: {expected}"]


def test_a_huge_value_is_shortened_in_the_message() -> None:
    line = one_line_naming(f"{MODEL}    ttl: {HUGER}\n", "models.m.ttl")
    assert "(400 characters)" in line or "(402 characters)" in line


def test_sizes_are_bounded_in_every_spelling() -> None:
    for value in ("1099511627777", "2TB", "1" + "0" * 400 + "MB"):
        line = one_line_naming(f"maxRequestSize: {value}\n{MODEL}", "maxRequestSize")
        assert "1TiB" in line
    config = parse_config(f"maxRequestSize: 1TiB\n{MODEL}", FILE, environ={})
    assert config.max_request_size == 1 << 40


def test_numbers_in_range_still_work() -> None:
    config = parse_config(textwrap.dedent("""
        healthCheckTimeout: 86400
        globalTTL: 31536000
        models:
          m: {cmd: "srv --port ${PORT}", concurrencyLimit: 100000, maxQueue: 0}
        """), FILE, environ={})
    assert config.health_check_timeout == 86400
    assert config.models["m"].ttl == 31536000
    assert config.models["m"].concurrency_limit == 100000


# --- item 12: macro expansion is bounded ---------------------------------------------------


def doubling_chain(length: int) -> str:
    """m0 is 16 characters; each next macro is the previous one twice."""
    lines = ["macros:", "  m0: 'abcdefghijklmnop'"]
    lines += [f"  m{i}: '${{m{i - 1}}}${{m{i - 1}}}'" for i in range(1, length)]
    lines += ["models:", "  m:", f"    cmd: srv --port ${{PORT}} ${{m{length - 1}}}"]
    return "\n".join(lines) + "\n"


def chain_failure(problem: str, length: int) -> None:
    """One line naming the value and the macro whose substitution crossed the bound."""
    match = re.fullmatch(
        r"(.*): models\.m\.cmd: macro 'm(\d+)' makes this value longer than (\d+) characters "
        r"\(a macro repeating another macro doubles the text at every step\)", problem)
    assert match, problem
    assert 0 < int(match.group(2)) < length
    assert int(match.group(3)) == MAX_EXPANDED_CHARS


@pytest.mark.parametrize("length", [26, 40])
def test_a_doubling_macro_chain_fails_naming_the_macro(length: int) -> None:
    found = problems(doubling_chain(length))
    assert len(found) == 1, found
    chain_failure(found[0], length)


def test_a_chain_that_stays_under_the_bound_expands() -> None:
    config = parse_config(doubling_chain(14), FILE, environ={})
    assert len(config.models["m"].cmd[-1]) == 16 * 2 ** 13


def test_many_macros_times_many_values_hit_the_step_budget() -> None:
    macros = "macros:\n" + "".join(f"  k{i}: v\n" for i in range(3000))
    uses = ", ".join(f"'${{k{i}}}'" for i in range(8))
    models = "models:\n" + "".join(
        f"  m{i}: {{cmd: 'srv --port ${{PORT}}', metadata: {{a: [{uses}]}}}}\n"
        for i in range(200))
    found = problems(macros + models)
    assert len(found) == 1, found
    assert f"macro expansion needs more than {MAX_EXPANSION_STEPS} steps" in found[0]


def test_a_reload_with_a_macro_bomb_is_refused_and_keeps_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MODEL)
    service = LlamaSwapService(load_config(str(path)), Clock())
    before = service.config
    path.write_text(doubling_chain(40))
    with pytest.raises(ConfigError) as raised:
        service.reload()
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith(f"{path}: ")
    chain_failure(raised.value.problems[0], 40)
    assert service.config is before


# --- item 14: API keys ---------------------------------------------------------------------


def test_the_same_key_under_two_scopes_is_an_error() -> None:
    found = problems(MODEL + textwrap.dedent("""
        apiKeys:
          - {key: sk-shared, scope: inference}
          - sk-other
          - sk-shared
        """))
    assert found == [f"{FILE}: apiKeys[2]: the same api key as apiKeys[0] with a different "
                     "scope or models; give each key one entry"]


def test_the_same_key_with_other_models_is_an_error() -> None:
    found = problems(MODEL + "  n:\n    cmd: srv --port ${PORT}\n" + textwrap.dedent("""
        apiKeys:
          - {key: sk-shared, scope: inference, models: [m]}
          - {key: sk-shared, scope: inference, models: [n]}
        """))
    assert found == [f"{FILE}: apiKeys[1]: the same api key as apiKeys[0] with a different "
                     "scope or models; give each key one entry"]


def test_the_same_key_twice_with_the_same_grant_is_accepted() -> None:
    config = parse_config(MODEL + "apiKeys: [sk-a, {key: sk-a, scope: all}, sk-b]\n", FILE,
                          environ={})
    assert config.api_keys == ("sk-a", "sk-b")


@pytest.mark.parametrize("entry", ["12345", "true", "1.5", "{key: 12345, scope: inference}"])
def test_a_key_that_is_not_a_string_is_an_error(entry: str) -> None:
    found = problems(f"{MODEL}apiKeys: [sk-fine, {entry}]\n")
    assert found == [f"{FILE}: apiKeys[1]: api key must be a string (put it in quotes)"]
    assert "12345" not in found[0]


def test_a_quoted_numeric_key_is_fine() -> None:
    config = parse_config(f"{MODEL}apiKeys: ['12345']\n", FILE, environ={})
    assert config.api_keys == ("12345",)
