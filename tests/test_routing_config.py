"""routing.scheduler, matrix routing and resource budgets as they come out of the config."""

from __future__ import annotations

import math

import pytest

from llamaswap.config import ConfigError, parse_config

MODELS = """
models:
  a: {cmd: "server a", proxy: "http://127.0.0.1:9001"}
  b: {cmd: "server b", proxy: "http://127.0.0.1:9002"}
  c: {cmd: "server c", proxy: "http://127.0.0.1:9003"}
"""


def parse(text: str):  # noqa: ANN201
    return parse_config(text + MODELS, "config.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(text)
    return raised.value.problems


def test_swapaware_is_the_default_with_documented_knobs() -> None:
    scheduler = parse("").scheduler
    assert (scheduler.use, scheduler.hold_time, scheduler.batch_time, scheduler.max_age) == (
        "swapaware", 1.0, 10.0, 30.0)
    assert (scheduler.queue_timeout, scheduler.heartbeat, scheduler.max_queue) == (600.0, 5.0, 0)


def test_fifo_is_llama_swaps_policy_and_keeps_its_priorities() -> None:
    scheduler = parse("routing:\n  scheduler:\n    use: fifo\n    settings:\n"
                      "      fifo: {priority: {b: 3}}\n").scheduler
    assert scheduler.use == "fifo" and scheduler.priority == {"b": 3}
    assert scheduler.hold_time == 0 and scheduler.batch_time == math.inf


def test_llama_swap_fifo_priorities_apply_under_the_default_policy() -> None:
    config = parse("routing:\n  scheduler:\n    settings:\n      fifo: {priority: {c: 7}}\n")
    assert config.scheduler.use == "swapaware" and config.scheduler.priority == {"c": 7}
    assert config.warnings == ()


def test_swapaware_settings_are_read() -> None:
    scheduler = parse("routing:\n  scheduler:\n    maxQueue: 5\n    queueTimeout: 60\n"
                      "    heartbeat: 0\n    abandonUnneededLoads: true\n    settings:\n"
                      "      swapaware: {holdTime: 0.5, batchTime: 4, maxAge: 9}\n").scheduler
    assert (scheduler.hold_time, scheduler.batch_time, scheduler.max_age) == (0.5, 4.0, 9.0)
    assert (scheduler.max_queue, scheduler.queue_timeout, scheduler.heartbeat) == (5, 60.0, 0.0)
    assert scheduler.abandon_unneeded_loads


@pytest.mark.parametrize(("snippet", "expected"), [
    ("routing:\n  scheduler:\n    use: lifo\n",
     'config.yaml: routing.scheduler.use: unknown scheduler "lifo" (valid: swapaware, fifo)'),
    ("routing:\n  scheduler:\n    settings:\n      swapaware: {holdTime: -1}\n",
     "config.yaml: routing.scheduler.settings.swapaware.holdTime: must be >= 0, got -1"),
    ("routing:\n  scheduler:\n    settings:\n      swapaware: {priority: {zz: 1}}\n",
     'config.yaml: routing.scheduler.settings.swapaware.priority.zz: priority references '
     'unknown model "zz"'),
    ("routing:\n  scheduler:\n    maxQueue: -2\n",
     "config.yaml: routing.scheduler.maxQueue: must be >= 0, got -2"),
])
def test_scheduler_errors_name_the_key(snippet: str, expected: str) -> None:
    assert expected in problems(snippet)


def test_matrix_router_compiles_sets() -> None:
    config = parse("routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n"
                   "        vars: {x: a}\n        evict_costs: {x: 5}\n"
                   "        sets: {pair: 'x & b', solo: c}\n")
    assert config.matrix is not None
    assert config.matrix.solve("b", {"a"}) == frozenset()
    assert config.matrix.solve("c", {"a", "b"}) == {"a", "b"}
    assert config.matrix.evict_costs == {"a": 5}


def test_legacy_top_level_matrix_is_accepted() -> None:
    assert parse("matrix:\n  sets: {s: 'a & b'}\n").matrix is not None


@pytest.mark.parametrize(("matrix", "expected"), [
    ("{sets: {}}", "matrix: matrix must define at least one set"),
    ("{vars: {x: nope}, sets: {s: a}}", 'var key "x" references unknown model "nope"'),
    ("{evict_costs: {a: 0}, sets: {s: a}}", 'evict_cost for "a" must be a positive integer'),
    ("{evict_costs: {zz: 1}, sets: {s: a}}", 'evict_costs: unknown var or model "zz"'),
    ("{sets: {s: 'a & q'}}", 'unknown var or model "q"'),
    ("{sets: {s: '+s'}}", 'circular reference detected involving set "s"'),
])
def test_matrix_errors(matrix: str, expected: str) -> None:
    lines = problems(f"matrix: {matrix}\n")
    assert any(expected in line and line.startswith("config.yaml: matrix") for line in lines)


def test_resources_are_read_and_checked() -> None:
    config = parse_config("resources: {vram: 24}\nmodels:\n"
                          "  a: {cmd: x, proxy: 'http://h:1', resources: {vram: 9}}\n", "c.yaml")
    assert config.capacities == {"vram": 24.0}
    assert config.models["a"].resources == {"vram": 9.0}
    with pytest.raises(ConfigError) as raised:
        parse_config("resources: {vram: 24}\nmodels:\n"
                     "  a: {cmd: x, proxy: 'http://h:1', resources: {vram: 30, ram: 1}}\n",
                     "c.yaml")
    joined = "\n".join(raised.value.problems)
    assert "c.yaml: models.a.resources.vram: needs 30 but the capacity is 24" in joined
    assert 'c.yaml: models.a.resources.ram: unknown resource "ram"' in joined


def test_per_model_max_queue_and_loading_state() -> None:
    config = parse_config("sendLoadingState: true\nmodels:\n  a: {cmd: x, proxy: 'http://h:1',"
                          " maxQueue: 3, sendLoadingState: false}\n", "c.yaml")
    assert config.send_loading_state is True
    assert config.models["a"].max_queue == 3 and config.models["a"].send_loading_state is False


def test_scoped_api_keys_are_read_and_checked() -> None:
    config = parse("apiKeys: [plain, {key: k2, scope: inference, models: [a]}]\n")
    assert config.api_keys == ("plain", "k2")
    scope = config.api_key_scopes["k2"]
    assert scope.scope == "inference" and scope.models == {"a"}
    lines = problems("apiKeys: [{key: k, scope: god}, {key: j, models: [zz]}, {scope: all}]\n")
    assert 'config.yaml: apiKeys[0].scope: unknown scope "god" (valid: all, inference, '\
           'management)' in lines
    assert 'config.yaml: apiKeys[1].models: unknown model "zz"' in lines
    assert "config.yaml: apiKeys[2]: must be a key or a mapping with a key" in lines
