"""Request-body filters (``llamaswap/filters.py``): order, protection, change detection."""

from __future__ import annotations

from llamaswap.filters import Filters, apply_filters, parse_strip_params


def test_strip_params_are_trimmed_sorted_deduplicated_and_never_model() -> None:
    assert parse_strip_params(" top_p,temperature , model,,top_p") == ("temperature", "top_p")


def test_order_is_use_model_name_strip_set_then_set_by_id() -> None:
    filters = Filters(strip_params=("temperature", "nested.drop"),
                      set_params={"top_k": 40, "temperature": 0.1, "model": "evil"},
                      set_params_by_id={"m:fast": {"top_k": 1, "nested.keep": True}})
    body = {"model": "m:fast", "temperature": 0.9, "nested": {"drop": 1, "stay": 2}}
    assert apply_filters(body, filters, "m:fast", use_model_name="real-m")
    # setParams runs after stripParams, so a stripped key can be forced back to a value;
    # setParamsByID overrides setParams; "model" only ever changes through useModelName.
    assert body == {"model": "real-m", "temperature": 0.1, "top_k": 1,
                    "nested": {"stay": 2, "keep": True}}


def test_set_by_id_only_applies_to_its_requested_name() -> None:
    filters = Filters(set_params_by_id={"m:think": {"think": True}})
    body = {"model": "m"}
    assert not apply_filters(body, filters, "m")
    assert body == {"model": "m"}


def test_unchanged_body_is_reported_unchanged() -> None:
    filters = Filters(strip_params=("absent",), set_params={"top_k": 3})
    assert not apply_filters({"model": "m", "top_k": 3}, filters, "m")
    assert apply_filters({"model": "m", "top_k": 4}, filters, "m")


def test_set_params_values_are_copied_not_shared() -> None:
    filters = Filters(set_params={"stop": ["a"]})
    first, second = {"model": "m"}, {"model": "m"}
    apply_filters(first, filters, "m")
    first["stop"].append("b")
    apply_filters(second, filters, "m")
    assert second["stop"] == ["a"]
