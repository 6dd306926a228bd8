"""The worker's sans-IO core: the slot table and the read planner, without Redis or asyncio."""

from __future__ import annotations

import random

import pytest

from dispatcher import Task
from dispatcher.store import codec
from workers.slots import Phase, Read, ReadPlanner, SlotError, Slots


def delivery(n: int = 0) -> codec.Delivery:
    task = Task(capability="c", payload=n)
    return codec.Delivery(f"{n}-0", task, b"", 1, 0, b"1")


def test_a_slot_is_held_from_the_read_until_its_outcome_is_recorded() -> None:
    slots = Slots(2)
    slots.take(("c", "1-0"), delivery(1))
    assert slots.free == 1
    slots.settling(("c", "1-0"))  # the handler returned: the slot stays taken until the settle is recorded
    assert slots.free == 1 and slots.held[("c", "1-0")].phase is Phase.SETTLING
    assert slots.release(("c", "1-0")) is not None
    assert slots.free == 2
    assert slots.release(("c", "1-0")) is None  # twice is harmless


def test_an_entry_released_while_a_read_of_the_own_pending_list_is_out_is_not_started_from_its_reply() -> None:
    # The read's reply can still hold an entry whose settle landed after Redis answered it (seen in chaos scenario
    # 19: a live worker ran a task twice, past its key's cap). While watching, a released entry stays known.
    slots = Slots(capacity=2)
    key = ("echo", "1-0")
    slots.take(key, None)
    slots.watch()
    slots.settling(key)
    assert slots.release(key) is not None
    assert slots.known(key) and not slots.holds(key)
    assert not slots.known(("echo", "2-0"))
    slots.unwatch()
    assert not slots.known(key)  # once the reply is handled, the entry is forgotten
    slots.take(key, None)  # and may be held again (a group recreated at 0 delivers it afresh)
    assert slots.known(key)


def test_taking_a_slot_that_is_not_free_is_refused() -> None:
    slots = Slots(1)
    slots.take(("c", "1-0"), delivery())
    with pytest.raises(SlotError, match="no free slot"):
        slots.take(("c", "2-0"), delivery())
    with pytest.raises(SlotError, match="held already"):
        slots.take(("c", "1-0"), delivery())


def test_entries_of_two_streams_with_the_same_id_are_held_apart() -> None:
    slots = Slots(2)
    slots.take(("a", "5-0"), delivery())
    slots.take(("b", "5-0"), delivery())
    assert slots.count("a") == slots.count("b") == 1
    slots.release(("a", "5-0"))
    assert slots.holds(("b", "5-0")) and not slots.holds(("a", "5-0"))


def test_a_stray_thread_keeps_a_slot_after_its_entry_settled() -> None:
    slots = Slots(1)
    slots.take(("c", "1-0"), delivery())
    slots.stray()  # the sync handler timed out; its thread runs on
    slots.settling(("c", "1-0"))
    slots.release(("c", "1-0"))  # the timeout's retry is recorded ...
    assert slots.free == 0  # ... but the thread still holds a slot: the pool never over-commits
    slots.stray_ended()
    assert slots.free == 1
    with pytest.raises(SlotError):
        slots.stray_ended()


def test_a_forced_take_is_for_hand_backs_beyond_the_capacity() -> None:
    slots = Slots(1)
    slots.take(("c", "1-0"), delivery())
    slots.take(("c", "2-0"), delivery(), Phase.SETTLING, force=True)
    assert slots.free == -1


@pytest.mark.parametrize("seed", range(20))
def test_held_entries_never_exceed_the_concurrency_under_random_driving(seed: int) -> None:
    """The invariant behind 'a worker's pending entries never exceed its concurrency': a driver that reads only
    ``plan().most`` entries into free slots never holds more than the capacity, whatever the interleaving."""
    rng = random.Random(seed)
    capacity = rng.randint(1, 12)
    caps = tuple(f"c{i}" for i in range(rng.randint(1, 30)))
    slots, planner = Slots(capacity), ReadPlanner(caps)
    next_id = 0
    for _ in range(2000):
        action = rng.random()
        if action < 0.5:
            read = planner.plan(slots.free, {})
            if read is not None and not read.block:
                got = rng.randint(0, read.most)
                assert read.most <= slots.free
                for _ in range(got):
                    next_id += 1
                    slots.take((rng.choice(read.capabilities), f"{next_id}-0"), delivery())
                planner.done(read, got)
        elif action < 0.8 and slots.held:
            key = rng.choice(list(slots.held))
            slots.settling(key)
        elif slots.held:
            key = rng.choice([k for k, s in slots.held.items() if s.phase is Phase.SETTLING] or [None])  # type: ignore[list-item]
            if key is not None:
                slots.release(key)
        assert 0 <= len(slots.held) + slots.strays <= capacity


def test_one_capability_is_one_blocking_read_of_every_free_slot() -> None:
    assert ReadPlanner(("c",)).plan(8, {}) == Read(("c",), 8, block=True)


def test_few_capabilities_share_the_free_slots_in_one_blocking_read() -> None:
    read = ReadPlanner(("a", "b", "c")).plan(7, {})
    assert read == Read(("a", "b", "c"), 2, block=True)
    assert read.most <= 7


def test_no_free_slot_or_every_circuit_open_reads_nothing() -> None:
    planner = ReadPlanner(("a", "b"))
    assert planner.plan(0, {}) is None
    assert planner.plan(4, {"a": 0, "b": 0}) is None


def test_a_half_open_circuit_limits_the_read_to_its_one_trial() -> None:
    read = ReadPlanner(("a", "b")).plan(8, {"a": 1, "b": 8})
    assert read is not None and read.count == 1  # the trial capability takes at most one entry


def test_many_capabilities_are_scanned_in_turn_then_waited_on_together() -> None:
    caps = tuple(f"c{i:03}" for i in range(200))
    planner = ReadPlanner(caps)
    seen: list[str] = []
    reads = 0
    while True:
        read = planner.plan(10, {})
        assert read is not None
        reads += 1
        if read.block:  # may return more than 10 at once if many streams filled just now: handed back
            assert set(read.capabilities) == set(caps) and read.count == 1
            break
        assert read.most <= 10
        seen += read.capabilities
        planner.done(read, 0)
    assert sorted(seen) == sorted(caps), "every capability read once before the worker blocks"
    assert reads == 200 // 10 + 1
    assert planner.round_empty


def test_a_scan_that_finds_work_starts_a_new_round_from_where_it_stopped() -> None:
    planner = ReadPlanner(tuple("abcdef"))
    first = planner.plan(2, {})
    assert first is not None and first.capabilities == ("a", "b")
    planner.done(first, 1)
    second = planner.plan(2, {})
    assert second is not None and second.capabilities == ("c", "d")
    planner.done(second, 0)
    planner.done(planner.plan(2, {}), 0)  # type: ignore[arg-type]
    assert not planner.round_empty  # a, b found work: only 4 of 6 scanned empty since
    third = planner.plan(2, {})
    assert third is not None and third.capabilities == ("a", "b") and not third.block
