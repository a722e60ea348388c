"""Selector choice and selector/profile config validation."""

from __future__ import annotations

import pytest

from llamaswap.config import ConfigError, parse_config
from llamaswap.selectors import (
    Disabled,
    NoTarget,
    ProfileConfig,
    Rewriter,
    SelectorConfig,
    SelectorState,
    choose,
    reserve,
)


def states(**by_target: str):  # type: ignore[no-untyped-def]
    return lambda target: by_target.get(target, "stopped")


def test_pin_always_takes_the_first_target() -> None:
    pin = SelectorConfig("s", "pin", ("a", "b"))
    assert choose(pin, states(b="ready"), SelectorState()) == "a"


@pytest.mark.parametrize(("running", "expected"), [
    ({"a": "starting", "c": "ready"}, "c"),
    ({"a": "starting", "b": "ready", "c": "ready"}, "b"),
    ({"b": "starting", "c": "starting"}, "b"),
    ({}, "a"),
])
def test_warm_prefers_ready_then_starting_then_the_first(running, expected) -> None:  # type: ignore[no-untyped-def]
    warm = SelectorConfig("s", "warm", ("a", "b", "c"))
    assert choose(warm, states(**running), SelectorState()) == expected


def test_spillover_fills_each_target_before_starting_the_next() -> None:
    spill = SelectorConfig("s", "spillover", ("a", "b", "c"), spillover=2)
    memory = SelectorState()
    releases = {}
    picks = []
    for _ in range(3):
        target = choose(spill, states(), memory)
        picks.append(target)
        releases.setdefault(target, []).append(reserve(memory, target))
    assert picks == ["a", "a", "b"]
    releases["a"].pop()()
    assert choose(spill, states(a="ready", b="ready", c="ready"), memory) == "c"
    with pytest.raises(NoTarget, match="no available spillover targets"):
        choose(spill, states(a="stopping", b="stopping", c="stopping"), memory)


def test_spillover_over_remote_targets_alternates_then_reuses() -> None:
    spill = SelectorConfig("s", "spillover", ("r1", "r2"), spillover=1)
    memory = SelectorState()
    remote = states(r1="remote", r2="remote")
    first = choose(spill, remote, memory)
    release_first = reserve(memory, first)
    second = choose(spill, remote, memory)
    reserve(memory, second)
    assert (first, second) == ("r1", "r2")
    release_first()
    release_first()  # idempotent
    assert memory.reservations == {"r1": 0, "r2": 1}
    assert choose(spill, remote, memory) == "r1"


def test_rewriter_applies_the_active_profile_then_the_selector() -> None:
    rewriter = Rewriter({"fast": SelectorConfig("fast", "pin", ("m2",))},
                        {"p": ProfileConfig("p", "", {"public": "fast", "off": None})},
                        states())
    assert rewriter.rewrite("public")[0] == "public"  # no profile active
    rewriter.active_profile = "p"
    assert rewriter.rewrite("public")[0] == "m2"
    assert rewriter.rewrite("other")[0] == "other"
    with pytest.raises(Disabled):
        rewriter.rewrite("off")


BASE = """models:
  a: {cmd: "x ${PORT}", aliases: [aa]}
  b: {cmd: "y ${PORT}"}
  c: {cmd: "z ${PORT}"}
groups:
  together: {swap: false, members: [a, b]}
peers:
  cloud: {proxy: "http://cloud", models: [gpt]}
"""


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + extra, "c.yaml")
    return e.value.problems


def test_valid_selectors_and_profiles_load() -> None:
    config = parse_config(BASE + """selectors:
  any: {strategy: spillover, targets: [aa, b], settings: {spillover: 3}}
  hot: {strategy: warm, targets: [a, c], unlisted: true}
  remote: {strategy: pin, targets: [cloud/gpt]}
profiles:
  coding: {description: code, pins: {public: any, hidden: "", also: ~, raw: c}}
""")
    assert config.selectors["any"].spillover == 3
    assert config.profiles["coding"].pins == {"public": "any", "hidden": None, "also": None,
                                              "raw": "c"}
    assert not any("not supported" in w for w in config.warnings)


def test_selector_problems() -> None:
    assert problems("""selectors:
  a: {strategy: pin, targets: [b]}
  s1: {targets: [a]}
  s2: {strategy: fast, targets: [a]}
  s3: {strategy: pin, targets: []}
  s4: {strategy: pin, targets: [s1, nope]}
  s5: {strategy: warm, targets: [cloud/gpt]}
  s6: {strategy: spillover, targets: [a, c], settings: {spillover: 0}}
  s7: {strategy: pin, targets: [a, aa]}
""") == [
        "c.yaml: selectors.a: selectors.a: name conflicts with model ID/alias",
        "c.yaml: selectors.s1.strategy: selectors.s1.strategy is required",
        'c.yaml: selectors.s2.strategy: selectors.s2: unknown strategy "fast" (valid: warm, '
        "pin, spillover)",
        "c.yaml: selectors.s3.targets: selectors.s3.targets must contain at least one entry",
        'c.yaml: selectors.s4.targets[0]: selectors.s4 references selector "s1"; selector '
        "chaining is not supported",
        'c.yaml: selectors.s4.targets[1]: selectors.s4 references unknown model "nope"',
        'c.yaml: selectors.s5.targets[0]: selectors.s5: target "cloud/gpt" must resolve to a '
        'local model for strategy "warm"',
        "c.yaml: selectors.s6.settings.spillover: selectors.s6.settings.spillover must be >= 1",
        "c.yaml: selectors.s6.targets: selectors.s6: spillover targets must share one "
        "routing group",
        "c.yaml: selectors.s7.targets[1]: selectors.s7.targets contains duplicate resolved "
        "model a",
    ]


def test_spillover_targets_must_share_one_matrix_set_and_one_group() -> None:
    matrix_models = """models:
  a: {cmd: "x ${PORT}"}
  b: {cmd: "y ${PORT}"}
selectors:
  s: {strategy: spillover, targets: [a, b]}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(matrix_models + 'matrix:\n  sets:\n    apart: "a | b"\n', "c.yaml")
    assert e.value.problems == ["c.yaml: selectors.s.targets: selectors.s: spillover targets "
                                "must all appear together in one expanded matrix set"]
    together = parse_config(matrix_models + 'matrix:\n  sets:\n    one: a\n'
                            '    both: "(a | b) & +one"\n', "c.yaml")
    assert together.selectors["s"].targets == ("a", "b")
    with pytest.raises(ConfigError) as e:
        parse_config(matrix_models, "c.yaml")  # both in the swapping (default) group
    assert e.value.problems == ["c.yaml: selectors.s.targets: selectors.s: spillover targets "
                                "must share a group with swap: false"]


def test_a_pin_named_like_a_peer_model_is_refused() -> None:
    assert problems("profiles:\n  p: {pins: {cloud/gpt: a, gpt: b}}\n") == [
        'c.yaml: profiles.p.pins.cloud/gpt: profile p pin "cloud/gpt" conflicts with the '
        "fully qualified peer model name"]


def test_profile_problems() -> None:
    assert problems("""profiles:
  old: [a, b]
  empty: {pins: {}}
  bad: {pins: {x: nope}}
""") == [
        "c.yaml: profiles.old: profile must be a mapping with description and pins; the "
        "legacy list syntax is no longer supported",
        "c.yaml: profiles.empty.pins: profiles.empty.pins must contain at least one entry",
        'c.yaml: profiles.bad.pins.x: profiles.bad.pins.x references unknown model "nope"',
    ]
