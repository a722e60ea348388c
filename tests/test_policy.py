"""The swap policy as a pure function: snapshots in, decisions out. No reactor."""

from __future__ import annotations

from fakes import make_config, model

from llamaswap.config import GroupConfig
from llamaswap.policy import (
    Grant,
    Join,
    ModelState,
    Pending,
    Snapshot,
    StartSwap,
    eviction_for,
    may_admit,
    plan,
)

R, S, ST, STOP = ModelState.READY, ModelState.STOPPED, ModelState.STARTING, ModelState.STOPPING

# Three groups: a swap group (a1, a2), a coexisting group (b1, b2), a persistent group (p).
GROUPED = make_config(
    model("a1"), model("a2"), model("b1"), model("b2"), model("p"), model("free"),
    groups=[
        GroupConfig("A", ("a1", "a2"), swap=True, exclusive=True),
        GroupConfig("B", ("b1", "b2"), swap=False, exclusive=False),
        GroupConfig("P", ("p",), swap=True, exclusive=False, persistent=True),
    ],
)


def test_same_swap_group_member_is_evicted() -> None:
    assert eviction_for(GROUPED, "a2", {"a1"}) == {"a1"}


def test_exclusive_target_evicts_other_non_persistent_groups() -> None:
    assert eviction_for(GROUPED, "a1", {"b1", "b2", "p", "free"}) == {"b1", "b2", "free"}


def test_non_swap_group_members_coexist() -> None:
    assert eviction_for(GROUPED, "b2", {"b1"}) == frozenset()


def test_non_exclusive_target_never_evicts_other_groups_even_exclusive_ones() -> None:
    # llama-swap's documented gotcha: b1 (non-exclusive) leaves exclusive a1 running.
    assert eviction_for(GROUPED, "b1", {"a1", "free"}) == frozenset()


def test_persistent_group_is_never_evicted_by_others() -> None:
    assert "p" not in eviction_for(GROUPED, "free", {"p", "a1"})


def test_target_itself_is_never_in_its_eviction_set() -> None:
    assert eviction_for(GROUPED, "a1", {"a1"}) == frozenset()


def test_admission_respects_concurrency_limit() -> None:
    config = make_config(model("m", concurrency_limit=2))
    assert may_admit(config, "m", 1)
    assert not may_admit(config, "m", 2)


def test_ready_model_with_nothing_to_evict_is_granted() -> None:
    config = make_config(model("m"))
    snapshot = Snapshot(states={"m": R}, queue=(Pending(1, "m"),))
    assert plan(config, snapshot) == [Grant(1, "m")]


def test_cold_model_starts_a_swap_and_the_request_joins_it() -> None:
    config = make_config(model("m"))
    assert plan(config, Snapshot(queue=(Pending(1, "m"),))) == [
        StartSwap("m", frozenset()), Join(1, "m")]


def test_concurrent_cold_requests_share_one_start() -> None:
    config = make_config(model("m"))
    decisions = plan(config, Snapshot(queue=(Pending(1, "m"), Pending(2, "m"), Pending(3, "m"))))
    assert decisions.count(StartSwap("m", frozenset())) == 1
    assert [d for d in decisions if isinstance(d, Join)] == [Join(1, "m"), Join(2, "m"),
                                                             Join(3, "m")]


def test_request_for_model_already_loading_joins_the_active_swap() -> None:
    config = make_config(model("m"))
    snapshot = Snapshot(states={"m": ST}, swaps={"m": frozenset()}, queue=(Pending(4, "m"),))
    assert plan(config, snapshot) == [Join(4, "m")]


def test_swap_waits_while_the_victim_has_requests_in_flight() -> None:
    config = make_config(model("a"), model("b"))
    snapshot = Snapshot(states={"a": R}, in_flight={"a": 1}, queue=(Pending(1, "b"),))
    assert plan(config, snapshot) == []


def test_swap_evicts_the_victim_once_it_is_idle() -> None:
    config = make_config(model("a"), model("b"))
    snapshot = Snapshot(states={"a": R}, in_flight={"a": 0}, queue=(Pending(1, "b"),))
    assert plan(config, snapshot) == [StartSwap("b", frozenset({"a"})), Join(1, "b")]


def test_two_swap_group_members_never_load_at_once() -> None:
    # Requests for a and b arrive together with nothing running: the first starts a swap;
    # the second would have to evict the first's target, so it waits.
    config = make_config(model("a"), model("b"))
    decisions = plan(config, Snapshot(queue=(Pending(1, "a"), Pending(2, "b"))))
    assert decisions == [StartSwap("a", frozenset()), Join(1, "a")]


def test_queued_request_proceeds_when_the_blocking_swap_is_done() -> None:
    config = make_config(model("a"), model("b"))
    snapshot = Snapshot(states={"a": R}, in_flight={"a": 1}, queue=(Pending(2, "b"),))
    assert plan(config, snapshot) == []
    after = Snapshot(states={"a": R}, in_flight={"a": 0}, queue=(Pending(2, "b"),))
    assert plan(config, after) == [StartSwap("b", frozenset({"a"})), Join(2, "b")]


def test_disjoint_swaps_run_in_parallel() -> None:
    decisions = plan(GROUPED, Snapshot(states={"b1": R}, queue=(Pending(1, "b2"),
                                                                Pending(2, "p"))))
    assert StartSwap("b2", frozenset()) in decisions
    assert StartSwap("p", frozenset()) in decisions


def test_model_being_evicted_is_not_granted_even_if_ready() -> None:
    config = make_config(model("a"), model("b"))
    snapshot = Snapshot(states={"a": R}, swaps={"b": frozenset({"a"})},
                        queue=(Pending(1, "a"),))
    assert plan(config, snapshot) == []


def test_stopping_model_is_restarted_through_a_swap() -> None:
    # A request arriving during a TTL unload: the model must come back, not be granted.
    config = make_config(model("m"))
    snapshot = Snapshot(states={"m": STOP}, queue=(Pending(1, "m"),))
    assert plan(config, snapshot) == [StartSwap("m", frozenset()), Join(1, "m")]


def test_ready_model_is_served_from_the_queue_in_order_behind_a_blocked_request() -> None:
    # llama-swap FIFO semantics: a ready model's requests bypass a request blocked on it.
    config = make_config(model("a"), model("b"))
    snapshot = Snapshot(states={"a": R}, in_flight={"a": 1},
                        queue=(Pending(1, "b"), Pending(2, "a")))
    assert plan(config, snapshot) == [Grant(2, "a")]


def test_plan_does_not_mutate_the_snapshot() -> None:
    config = make_config(model("a"))
    snapshot = Snapshot(queue=(Pending(1, "a"),))
    plan(config, snapshot)
    assert snapshot.swaps == {}
