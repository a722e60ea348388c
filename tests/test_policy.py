"""The swap policy as a pure function: snapshots in, decisions out. No reactor."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
from fakes import make_config, model

from llamaswap.config import Config, GroupConfig, ModelConfig
from llamaswap.matrix import MatrixError, compile_matrix
from llamaswap.policy import (
    Grant,
    Join,
    ModelState,
    Pending,
    Snapshot,
    StartSwap,
    Unplaceable,
    eviction_for,
    lone_grant,
    may_admit,
    plan,
)
from llamaswap.routing import SchedulerConfig

R, ST, STOP = ModelState.READY, ModelState.STARTING, ModelState.STOPPING

# Three groups: a swap group (a1, a2), a coexisting group (b1, b2), a persistent group (p).
GROUPED = make_config(
    model("a1"), model("a2"), model("b1"), model("b2"), model("p"), model("free"),
    groups=[
        GroupConfig("A", ("a1", "a2"), swap=True, exclusive=True),
        GroupConfig("B", ("b1", "b2"), swap=False, exclusive=False),
        GroupConfig("P", ("p",), swap=True, exclusive=False, persistent=True),
    ],
    scheduler=SchedulerConfig.fifo(),
)


def fifo(*models: ModelConfig, **kw: object) -> Config:
    return make_config(*models, scheduler=SchedulerConfig.fifo(), **kw)  # type: ignore[arg-type]


def swapaware(*models: ModelConfig, **settings: object) -> Config:
    return make_config(*models, scheduler=SchedulerConfig(**settings))  # type: ignore[arg-type]


def decide(config: Config, **snapshot: object) -> list:
    return plan(config, Snapshot(**snapshot)).decisions  # type: ignore[arg-type]


# -- what coexists: groups --------------------------------------------------------------------

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
    assert "p" not in (eviction_for(GROUPED, "free", {"p", "a1"}) or set())


def test_target_itself_is_never_in_its_eviction_set() -> None:
    assert eviction_for(GROUPED, "a1", {"a1"}) == frozenset()


# -- what coexists: the matrix ----------------------------------------------------------------

IDS = ("a", "b", "c", "d")


def matrix_config(sets: dict[str, str], costs: dict[str, int] | None = None,
                  variables: dict[str, str] | None = None) -> Config:
    matrix = compile_matrix(sets, variables or {}, costs or {}, IDS)
    return replace(fifo(*(model(m) for m in IDS)), matrix=matrix)


def test_matrix_separate_sets_evict_each_other() -> None:
    config = matrix_config({"s1": "a", "s2": "b"})
    assert eviction_for(config, "b", {"a"}) == {"a"}


def test_matrix_and_lets_models_coexist() -> None:
    config = matrix_config({"both": "a & b"})
    assert eviction_for(config, "b", {"a"}) == frozenset()


def test_matrix_or_binds_looser_than_and_and_refs_expand() -> None:
    config = matrix_config({"base": "a & b | c", "more": "+base & d"})
    assert eviction_for(config, "d", {"a", "b"}) == frozenset()  # {a,b,d} is allowed
    assert eviction_for(config, "c", {"a", "b", "d"}) == {"a", "b"}  # {c,d}


def test_matrix_tie_goes_to_the_earlier_set() -> None:
    config = matrix_config({"first": "a & b", "second": "a & c"})
    assert eviction_for(config, "a", {"b", "c"}) == {"c"}


def test_matrix_keeps_the_expensive_model() -> None:
    config = matrix_config({"first": "a & c", "second": "a & b"}, costs={"b": 10, "c": 1})
    assert eviction_for(config, "a", {"b", "c"}) == {"c"}


def test_matrix_model_in_no_set_runs_alone() -> None:
    config = matrix_config({"s": "a & b"})
    assert eviction_for(config, "d", {"a", "b"}) == {"a", "b"}


def test_matrix_variables_name_models() -> None:
    config = matrix_config({"s": "x & y"}, variables={"x": "a", "y": "b"})
    assert eviction_for(config, "a", {"b"}) == frozenset()


@pytest.mark.parametrize(("sets", "message"), [
    ({"s": "a & nope"}, 'unknown var or model "nope"'),
    ({"s": "+t", "t": "+s"}, "circular reference"),
    ({"s": "+missing"}, "unknown set reference"),
    ({"s": "a &"}, "ends too early"),
    ({"s": "(a | b"}, 'missing ")"'),
    ({"s": "   "}, "empty expression"),
])
def test_matrix_bad_expressions_are_refused(sets: dict[str, str], message: str) -> None:
    with pytest.raises(MatrixError, match=re.escape(message)):
        compile_matrix(sets, {}, {}, IDS)


# -- what coexists: resource budgets ----------------------------------------------------------

def budget_config(**needs: float) -> Config:
    models = [model(m, resources={"vram": v}) for m, v in needs.items()]
    groups = [GroupConfig("all", tuple(needs), swap=False, exclusive=False)]
    return replace(fifo(*models, groups=groups), capacities={"vram": 24.0})


def test_budget_runs_any_set_that_fits() -> None:
    config = budget_config(a=8, b=8, c=8)
    assert eviction_for(config, "c", {"a", "b"}) == frozenset()


def test_budget_evicts_the_fewest_models() -> None:
    config = budget_config(big=16, s1=4, s2=4, new=12)
    snapshot = Snapshot(last_used={"big": 100.0, "s1": 1.0, "s2": 2.0})
    # Evicting big alone frees enough; the two small ones would not.
    assert eviction_for(config, "new", {"big", "s1", "s2"}, snapshot) == {"big"}


def test_budget_prefers_least_recently_used_then_idle_over_busy() -> None:
    config = budget_config(a=10, b=10, new=10)
    lru = Snapshot(last_used={"a": 5.0, "b": 1.0})
    assert eviction_for(config, "new", {"a", "b"}, lru) == {"b"}
    busy_b = Snapshot(last_used={"a": 5.0, "b": 1.0}, in_flight={"b": 1})
    assert eviction_for(config, "new", {"a", "b"}, busy_b) == {"a"}


def test_budget_uses_learnt_load_cost_as_tie_breaker() -> None:
    config = budget_config(a=10, b=10, new=10)
    snapshot = Snapshot(last_used={"a": 1.0, "b": 1.0}, load_cost={"a": 30.0, "b": 2.0})
    assert eviction_for(config, "new", {"a", "b"}, snapshot) == {"b"}


def test_budget_never_evicts_persistent_models_and_reports_unplaceable() -> None:
    models = [model("p", resources={"vram": 20}), model("new", resources={"vram": 10})]
    config = replace(fifo(*models, groups=[GroupConfig("P", ("p",), persistent=True)]),
                     capacities={"vram": 24.0})
    assert eviction_for(config, "new", {"p"}) is None
    decisions = decide(config, states={"p": R}, queue=(Pending(1, "new"),))
    assert len(decisions) == 1 and isinstance(decisions[0], Unplaceable)


# -- admission --------------------------------------------------------------------------------

def test_admission_respects_concurrency_limit() -> None:
    config = make_config(model("m", concurrency_limit=2))
    assert may_admit(config, "m", 1) is None
    assert "concurrencyLimit 2" in (may_admit(config, "m", 2) or "")


def test_admission_respects_per_model_and_global_queue_bounds() -> None:
    config = make_config(model("m", max_queue=2), model("n"),
                         scheduler=SchedulerConfig(max_queue=3))
    assert may_admit(config, "m", 0, waiting_for_model=1, waiting_total=1) is None
    assert "maxQueue 2" in (may_admit(config, "m", 0, waiting_for_model=2) or "")
    assert "routing.scheduler.maxQueue 3" in (may_admit(config, "n", 0, 0, 3) or "")


# -- FIFO: llama-swap's decision tree ---------------------------------------------------------

def test_ready_model_with_nothing_to_evict_is_granted() -> None:
    assert decide(fifo(model("m")), states={"m": R}, queue=(Pending(1, "m"),)) == [
        Grant(1, "m")]


def test_cold_model_starts_a_swap_and_the_request_joins_it() -> None:
    assert decide(fifo(model("m")), queue=(Pending(1, "m"),)) == [
        StartSwap("m", frozenset()), Join(1, "m")]


def test_concurrent_cold_requests_share_one_start() -> None:
    decisions = decide(fifo(model("m")), queue=(Pending(1, "m"), Pending(2, "m"),
                                                Pending(3, "m")))
    assert decisions.count(StartSwap("m", frozenset())) == 1
    assert [d for d in decisions if isinstance(d, Join)] == [Join(1, "m"), Join(2, "m"),
                                                             Join(3, "m")]


def test_request_for_model_already_loading_joins_the_active_swap() -> None:
    assert decide(fifo(model("m")), states={"m": ST}, swaps={"m": frozenset()},
                  queue=(Pending(4, "m"),)) == [Join(4, "m")]


def test_swap_waits_while_the_victim_has_requests_in_flight() -> None:
    config = fifo(model("a"), model("b"))
    assert decide(config, states={"a": R}, in_flight={"a": 1}, queue=(Pending(1, "b"),)) == []


def test_swap_evicts_the_victim_once_it_is_idle() -> None:
    config = fifo(model("a"), model("b"))
    assert decide(config, states={"a": R}, queue=(Pending(1, "b"),)) == [
        StartSwap("b", frozenset({"a"})), Join(1, "b")]


def test_a_request_granted_in_this_plan_protects_its_model_from_eviction() -> None:
    # Regression: a grant and a swap evicting the same model must not share a plan.
    config = fifo(model("a"), model("b"))
    decisions = decide(config, states={"a": R}, queue=(Pending(1, "a"), Pending(2, "b")))
    assert decisions == [Grant(1, "a")]


def test_two_swap_group_members_never_load_at_once() -> None:
    config = fifo(model("a"), model("b"))
    assert decide(config, queue=(Pending(1, "a"), Pending(2, "b"))) == [
        StartSwap("a", frozenset()), Join(1, "a")]


def test_disjoint_swaps_run_in_parallel() -> None:
    decisions = decide(GROUPED, states={"b1": R}, queue=(Pending(1, "b2"), Pending(2, "p")))
    assert StartSwap("b2", frozenset()) in decisions
    assert StartSwap("p", frozenset()) in decisions


def test_model_being_evicted_is_not_granted_even_if_ready() -> None:
    config = fifo(model("a"), model("b"))
    assert decide(config, states={"a": R}, swaps={"b": frozenset({"a"})},
                  queue=(Pending(1, "a"),)) == []


def test_stopping_model_is_restarted_through_a_swap() -> None:
    # A request arriving during a TTL unload: the model must come back, not be granted.
    assert decide(fifo(model("m")), states={"m": STOP}, queue=(Pending(1, "m"),)) == [
        StartSwap("m", frozenset()), Join(1, "m")]


def test_fifo_ready_model_bypasses_a_request_blocked_on_it() -> None:
    # llama-swap's fast path, which can starve the blocked request under steady load.
    config = fifo(model("a"), model("b"))
    assert decide(config, states={"a": R}, in_flight={"a": 1}, now=1000.0,
                  queue=(Pending(1, "b", arrived=0.0), Pending(2, "a", arrived=999.0))) == [
        Grant(2, "a")]


def test_priority_orders_the_queue_and_ties_keep_arrival_order() -> None:
    config = make_config(model("a"), model("b"), model("c"),
                         scheduler=SchedulerConfig.fifo(priority={"c": 5}))
    decisions = decide(config, queue=(Pending(1, "a"), Pending(2, "b"), Pending(3, "c")))
    assert decisions[0] == StartSwap("c", frozenset())


def test_plan_does_not_mutate_the_snapshot() -> None:
    snapshot = Snapshot(queue=(Pending(1, "a"),))
    plan(fifo(model("a")), snapshot)
    assert snapshot.swaps == {}


# -- swap-aware -------------------------------------------------------------------------------

AWARE = swapaware(model("a"), model("b"), hold_time=2.0, batch_time=10.0, max_age=30.0)


def test_a_model_whose_clients_return_is_held_and_the_wake_time_is_its_hold_end() -> None:
    result = plan(AWARE, Snapshot(states={"a": R}, ready_since={"a": 0.0},
                                  last_done={"a": 4.0}, now=5.0, returning=frozenset({"a"}),
                                  queue=(Pending(1, "b", arrived=4.5),)))
    assert result.decisions == []
    assert result.wake_at == 6.0  # hold ends 2 s after the last request finished


def test_a_model_nobody_came_back_to_is_not_held() -> None:
    # After a burst, holding the model would only delay the others.
    decisions = decide(AWARE, states={"a": R}, ready_since={"a": 0.0}, last_done={"a": 4.0},
                       now=5.0, queue=(Pending(1, "b", arrived=4.5),))
    assert decisions == [StartSwap("b", frozenset({"a"})), Join(1, "b")]


def test_after_the_hold_the_swap_goes_ahead() -> None:
    decisions = decide(AWARE, states={"a": R}, ready_since={"a": 0.0}, last_done={"a": 4.0},
                       now=6.0, queue=(Pending(1, "b", arrived=4.5),))
    assert decisions == [StartSwap("b", frozenset({"a"})), Join(1, "b")]


def test_resident_model_keeps_serving_its_queue_within_its_batch_time() -> None:
    decisions = decide(AWARE, states={"a": R}, ready_since={"a": 0.0}, in_flight={"a": 1},
                       now=5.0, queue=(Pending(1, "b", arrived=1.0), Pending(2, "a", 4.0)))
    assert decisions == [Grant(2, "a")]


def test_once_the_batch_time_is_over_new_requests_for_the_victim_wait() -> None:
    # b has waited 10 s of a's turn: a's new request is held back so a can drain.
    decisions = decide(AWARE, states={"a": R}, ready_since={"a": 0.0}, in_flight={"a": 1},
                       now=11.5, queue=(Pending(1, "b", arrived=1.0), Pending(2, "a", 11.0)))
    assert decisions == []


def test_batch_time_counts_from_when_the_waiting_request_arrived() -> None:
    # a has been resident for an hour; b just arrived, so a still gets its batch time.
    result = plan(AWARE, Snapshot(states={"a": R}, ready_since={"a": 0.0},
                                  in_flight={"a": 1}, now=3600.0,
                                  queue=(Pending(1, "b", arrived=3599.0),
                                         Pending(2, "a", arrived=3599.5))))
    assert result.decisions == [Grant(2, "a")]
    assert result.wake_at == 3609.0


def test_a_request_waiting_max_age_beats_hold_and_priority() -> None:
    config = swapaware(model("a"), model("b"), model("c"), hold_time=2.0, batch_time=100.0,
                       max_age=30.0, priority={"c": 10})
    decisions = decide(config, states={"a": R}, ready_since={"a": 0.0}, last_done={"a": 40.0},
                       now=41.0, returning=frozenset({"a"}),
                       queue=(Pending(1, "b", arrived=10.0),
                                        Pending(2, "c", arrived=40.5)))
    assert decisions[:2] == [StartSwap("b", frozenset({"a"})), Join(1, "b")]


def test_swapaware_grants_without_delay_when_nothing_waits() -> None:
    assert decide(AWARE, states={"a": R}, ready_since={"a": 0.0}, now=1.0,
                  queue=(Pending(1, "a", arrived=1.0),)) == [Grant(1, "a")]


def test_swapaware_cold_start_is_immediate_when_nothing_is_resident() -> None:
    assert decide(AWARE, now=1.0, queue=(Pending(1, "b", arrived=1.0),)) == [
        StartSwap("b", frozenset()), Join(1, "b")]


def test_fifo_never_holds() -> None:
    config = fifo(model("a"), model("b"))
    assert decide(config, states={"a": R}, last_done={"a": 4.9}, now=5.0,
                  queue=(Pending(1, "b", arrived=4.95),)) == [
        StartSwap("b", frozenset({"a"})), Join(1, "b")]
    assert SchedulerConfig.fifo().batch_time == math.inf


def test_hold_never_exceeds_the_learnt_reload_time() -> None:
    # a reloads in 0.5 s: holding it 2 s for a client that may come back is not worth it.
    result = plan(AWARE, Snapshot(states={"a": R}, ready_since={"a": 0.0}, last_done={"a": 4.0},
                                  now=4.6, returning=frozenset({"a"}), load_cost={"a": 0.5},
                                  queue=(Pending(1, "b", arrived=4.1),)))
    assert result.decisions == [StartSwap("b", frozenset({"a"})), Join(1, "b")]


@pytest.mark.parametrize("config", [GROUPED, budget_config(a=16, b=8, c=8)],
                         ids=["groups", "budget"])
def test_lone_grant_agrees_with_plan_for_every_state_combination(config: Config) -> None:
    """The router's shortcut must never decide differently from the full policy."""
    import itertools

    names = sorted(config.models)
    granted_some = refused_some = False
    for combo in itertools.product(list(ModelState), repeat=len(names)):
        states = dict(zip(names, combo, strict=True))
        for target in names:
            decisions = decide(config, states=states, queue=(Pending(1, target),))
            expected = decisions == [Grant(1, target)]
            assert lone_grant(config, target, states) is expected, (target, states)
            granted_some |= expected
            refused_some |= not expected
    assert granted_some and refused_some
