"""``${PORT}`` allocation: sorted order on a fresh start, each model's own port across reloads."""

from __future__ import annotations

from llamaswap.config import parse_config
from llamaswap.config.macros import allocate_ports


def test_a_fresh_start_allocates_in_sorted_model_order() -> None:
    assert allocate_ports(["b", "a", "c"], 5800, {}) == {"a": 5800, "b": 5801, "c": 5802}


def test_kept_models_keep_their_ports_and_new_ones_fill_the_lowest_free_port() -> None:
    ports = allocate_ports(["0new", "a", "c", "znew"], 5800, {"a": 5801, "c": 5803, "gone": 5800})
    assert ports == {"a": 5801, "c": 5803, "0new": 5800, "znew": 5802}


def test_a_port_a_removed_model_had_is_free_again() -> None:
    assert allocate_ports(["a", "b"], 5800, {"a": 5801}) == {"a": 5801, "b": 5800}


def test_the_loader_keeps_ports_given_by_the_previous_config() -> None:
    text = """
models:
  zeta: {cmd: "server --port ${PORT}"}
  alpha: {cmd: "server --port ${PORT}"}
  fixed: {cmd: "server --port 9000", proxy: "http://127.0.0.1:9000"}
"""
    fresh = parse_config(text, environ={})
    assert (fresh.models["alpha"].port, fresh.models["zeta"].port) == (5800, 5801)
    assert fresh.models["fixed"].port is None
    reloaded = parse_config(text.replace("  alpha:", "  aaa: {cmd: \"s ${PORT}\"}\n  alpha:"),
                            environ={}, keep_ports={"alpha": 5800, "zeta": 5801})
    assert (reloaded.models["alpha"].port, reloaded.models["zeta"].port) == (5800, 5801)
    assert reloaded.models["aaa"].port == 5802
    assert reloaded.models["aaa"].cmd == ("s", "5802")
    assert reloaded.models["zeta"].cmd == fresh.models["zeta"].cmd
    assert reloaded.models["zeta"].proxy == "http://localhost:5801"
