"""The fair gate's planner (sans-IO): weighted virtual-time order, key caps and limit room respected, tasks held
back passed over within a tenant and across tenants, held-back tenants flagged, stale ids dropped without a turn,
and the refunds when a limit refuses its sum."""

from __future__ import annotations

from collections import Counter

from dispatcher.fleet.fairplan import Candidate, Tenant, plan, without
from dispatcher.store.fair import Choice, Gates
from dispatcher.store.limits import LimitState

NOW_MS = 1_800_000_000_000.0


def gates(cap: int = 0, held: dict[str, int] | None = None, room: dict[str, int] | None = None) -> Gates:
    """Limits with ``room`` units free now (burst = room, nothing taken), a per-key cap and held permits."""
    states = {n: LimitState(n, 60_000.0, units, 0.0) for n, units in (room or {}).items()}
    return Gates(dict(states), NOW_MS, cap, held or {})


def tenant(name: str, n: int, vtime: float = 0.0, weight: float = 1.0, **gate: object) -> Tenant:
    return Tenant(vtime, weight, [Candidate(f"{name}{i}", **gate) for i in range(n)])  # type: ignore[arg-type]


def test_weights_give_turns_in_proportion_from_equal_virtual_times() -> None:
    p = plan([tenant("a", 50, weight=3), tenant("b", 50, weight=2), tenant("c", 50)], 60, gates())
    shares = Counter(c.tenant for c in p.chosen)
    assert shares == {0: 30, 1: 20, 2: 10}
    assert p.held_back == [False, False, False]


def test_the_lowest_virtual_time_goes_first() -> None:
    p = plan([tenant("a", 5, vtime=3.0), tenant("b", 5, vtime=0.0)], 4, gates())
    assert [c.task_id for c in p.chosen] == ["b0", "b1", "b2", "a0"]


def test_a_key_at_its_cap_is_passed_over_and_the_tasks_behind_it_go() -> None:
    a = Tenant(0.0, 1.0, [Candidate("a0", key="k"), Candidate("a1", key="k"), Candidate("a2", key="j")])
    p = plan([a], 10, gates(cap=2, held={"k": 1, "j": 0}))
    assert [(c.task_id, c.key) for c in p.chosen] == [("a0", "k"), ("a2", "j")]
    assert p.held_back == [True]  # a1 is left: held back by its key


def test_a_blocked_tenant_does_not_block_the_others_and_is_flagged() -> None:
    blocked = tenant("a", 3, vtime=0.0, key="full")
    p = plan([blocked, tenant("b", 5, vtime=1.0)], 4, gates(cap=1, held={"full": 1}))
    assert [c.task_id for c in p.chosen] == ["b0", "b1", "b2", "b3"]
    assert p.held_back == [True, False]


def test_limit_room_is_shared_by_every_tenant_and_units_are_summed() -> None:
    a = tenant("a", 5, units={"api": 2})
    b = tenant("b", 5, units={"api": 1, "tpm": 10})
    p = plan([a, b], 10, gates(room={"api": 5, "tpm": 100}))
    assert p.units == {"api": 5, "tpm": 10}
    assert [c.task_id for c in p.chosen] == ["a0", "b0", "a1"]  # then the 5 units are gone: both held back
    assert p.held_back == [True, True]


def test_an_unknown_limit_and_no_cap_hold_a_task_back() -> None:
    p = plan([tenant("a", 1, units={"gone": 1}), tenant("b", 1, key="k")], 5, gates(room={}))
    assert p.chosen == [] and p.held_back == [True, True]


def test_stale_ids_are_dropped_without_a_turn_and_room_ends_the_pass() -> None:
    a = Tenant(0.0, 1.0, [Candidate("gone", stale=True), Candidate("a1"), Candidate("a2")])
    p = plan([a], 1, gates())
    assert p.chosen == [Choice(0, "gone", None), Choice(0, "a1", None)]
    assert p.held_back == [False]  # room ran out: not held back


def test_without_drops_the_tasks_of_a_refused_limit_and_refunds_their_other_limits() -> None:
    a = Tenant(0.0, 1.0, [Candidate("a0", {"api": 1, "tpm": 7}), Candidate("a1", {"tpm": 3}), Candidate("a2")])
    p = plan([a], 5, gates(room={"api": 5, "tpm": 100}))
    kept, refund = without(p, {"api"})
    assert [c.task_id for c in kept] == ["a1", "a2"]
    assert refund == {"tpm": 7}


def test_a_held_back_tenant_is_told_held_by_a_limit_or_by_its_key() -> None:
    by_key = Tenant(0.0, 1.0, [Candidate("k0", key="k"), Candidate("k1", key="k")])
    by_limit = Tenant(0.0, 1.0, [Candidate("l0", units={"api": 5})])
    both = Tenant(0.0, 1.0, [Candidate("b0", key="k"), Candidate("b1", units={"api": 5})])
    free = tenant("f", 3)
    p = plan([by_key, by_limit, both, free], 10, gates(cap=1, held={"k": 1}, room={"api": 2}))
    assert p.held_back == [True, True, True, False]
    assert p.held_by == {0: "key", 1: "limit", 2: "limit"}  # a limit holding any of its tasks names the limit
