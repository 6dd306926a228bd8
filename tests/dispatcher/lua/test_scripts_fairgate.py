"""The fair gate's scripts on fakeredis and Redis, each reply: ``peek_fair.lua`` (room, tenants, their turns and
extra tasks, stale records), ``admit_fair.lua`` (chosen moves verified, permits, virtual times advanced and raised
for held-back tenants, empty tenants leave), ``count_permits.lua`` (the cap, live permits, stale ones removed at
the cap), and the batched ``take.lua`` calls of ``limits.take_many``; and submit's fair path with a priority."""

from __future__ import annotations

import pytest
import redis

from dispatcher import Task
from dispatcher.store import codec, fair, limits, streams
from dispatcher.store.fair import Choice
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.limits import Taken

LIMIT = 64 * 1024


@pytest.fixture
def space(prefix: str) -> KeySpace:
    return KeySpace(prefix)


@pytest.fixture
def keys(space: KeySpace) -> CapabilityKeys:
    return space.capability("fair")


def submit(gw: Gateway, keys: CapabilityKeys, tenant: str, n: int, **options: object) -> list[str]:
    items, ids = [], []
    for i in range(n):
        task = Task(capability="fair", payload=i, fairness_key=tenant, **options)  # type: ignore[arg-type]
        blob = codec.encode_task(task, LIMIT)
        items.append(
            streams.Enqueue(task.id, blob, version=codec.version_of(task), priority=task.priority, fairness_key=tenant)
        )
        ids.append(task.id)
    gw.run(streams.submit([(keys, items)], 60_000, 8))
    return ids


def vtimes(client: redis.Redis, keys: CapabilityKeys) -> dict[str, float]:
    return {k.decode(): v for k, v in client.zrange(keys.tenants, 0, -1, withscores=True)}


def test_submit_ranks_a_tenants_tasks_by_priority(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    low = submit(gw, keys, "a", 3, priority=0)
    high = submit(gw, keys, "a", 2, priority=9)
    none = submit(gw, keys, "a", 1)  # no priority ranks as 0
    queue = [m.decode() for m in client.zrange(keys.fair("a"), 0, -1)]
    assert queue[:2] == high
    assert [i for i in queue if i in low] == low  # one call keeps its order; other calls of the same ms go by id
    assert set(queue[2:]) == set(low + none)


def test_peek_returns_only_the_room_when_the_window_is_full(gw: Gateway, keys: CapabilityKeys) -> None:
    submit(gw, keys, "a", 3)
    client_free = gw.run(fair.peek(keys, ["a"], 8, 4))
    assert client_free[0] == 8
    gw.client.xadd(keys.stream, {"v": "1"})
    gw.client.xadd(keys.stream, {"v": "1"})
    assert gw.run(fair.peek(keys, ["a"], 2, 4)) == (0, [])


def test_peek_gives_each_tenant_its_turns_plus_extra(gw: Gateway, keys: CapabilityKeys) -> None:
    gw.client.hset(keys.weights, "a", "3")
    a, b = submit(gw, keys, "a", 20), submit(gw, keys, "b", 20)
    room, peeked = gw.run(fair.peek(keys, ["a", "b", "gone"], 8, 2))
    assert room == 8
    assert [(t.tenant, t.weight, t.length) for t in peeked] == [("a", 3.0, 20), ("b", 1.0, 20)]  # "gone": not in set
    # 8 turns at 3:1 from equal virtual times: a takes 6, b 2; each shows 2 more.
    assert [i for i, _ in peeked[0].tasks] == a[:8]
    assert [i for i, _ in peeked[1].tasks] == b[:4]
    assert all(blob is not None for t in peeked for _, blob in t.tasks)
    # a held back in the last pass: b counts its turns as if a were absent (8, + 2), a still shows its own (6 + 2).
    _, peeked = gw.run(fair.peek(keys, ["a", "b"], 8, 2, {"a"}))
    assert [i for i, _ in peeked[0].tasks] == a[:8]
    assert [i for i, _ in peeked[1].tasks] == b[:10]


def test_peek_marks_a_task_no_longer_waiting_as_stale(gw: Gateway, keys: CapabilityKeys) -> None:
    ids = submit(gw, keys, "a", 2)
    gw.client.hdel(keys.index, ids[0])  # settled or cancelled elsewhere
    _, (tenant,) = gw.run(fair.peek(keys, ["a"], 8, 2))
    assert tenant.tasks[0] == (ids[0], None)
    assert tenant.tasks[1][0] == ids[1] and tenant.tasks[1][1] is not None


def test_admit_fair_moves_the_chosen_verifies_them_and_advances_virtual_time(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    client.hset(keys.weights, "a", "2")
    a, b = submit(gw, keys, "a", 3), submit(gw, keys, "b", 3)
    chosen = [Choice(0, a[0], "repo-1"), Choice(0, a[1], None), Choice(1, b[0], None), Choice(1, "not-queued", None)]
    assert gw.run(fair.admit_chosen(keys, ["a", "b"], [False, False], chosen)) == (3, 2)
    assert client.xlen(keys.stream) == 3
    assert [m.decode() for m in client.zrange(keys.permits("repo-1"), 0, -1)] == [a[0]]
    assert client.zcard(keys.fair("a")) == 1 and client.zcard(keys.fair("b")) == 2
    assert not client.hget(keys.index, a[0]).startswith(b"d")  # its entry id now
    assert vtimes(client, keys) == {"a": 1.0, "b": 1.0}  # 2 admissions / weight 2, 1 / weight 1


def test_admit_fair_raises_a_held_back_tenant_to_the_admitted_start_time(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    a, _ = submit(gw, keys, "a", 5), submit(gw, keys, "b", 5)
    chosen = [Choice(0, a[i], None) for i in range(4)]
    assert gw.run(fair.admit_chosen(keys, ["a", "b"], [False, True], chosen)) == (4, 2)
    # a advanced to 4; its last admission started at 3: b, held back at 0, joins there (no credit banked).
    assert vtimes(client, keys) == {"a": 4.0, "b": 3.0}
    assert gw.run(fair.admit_chosen(keys, ["a", "b"], [False, True], [])) == (0, 2)
    assert vtimes(client, keys) == {"a": 4.0, "b": 3.0}  # nobody admitted: nothing to raise to


def test_admit_fair_drops_a_stale_id_and_an_emptied_tenant_leaves(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    ids = submit(gw, keys, "a", 2)
    client.hdel(keys.index, ids[0])
    chosen = [Choice(0, ids[0], None), Choice(0, ids[1], None)]
    assert gw.run(fair.admit_chosen(keys, ["a"], [False], chosen)) == (1, 0)
    assert client.exists(keys.tenants, keys.fair("a")) == 0


def test_count_permits_counts_live_holders_and_removes_stale_ones_at_the_cap(
    gw: Gateway, client: redis.Redis, space: KeySpace, keys: CapabilityKeys
) -> None:
    assert gw.run(fair.gates(space, keys, [], ["k1"])).cap == 0  # no cap set
    client.hset(keys.caps, "per_key", 2)
    client.hset(keys.index, "live", "1-0")
    client.zadd(keys.permits("k1"), {"gone": 0})  # under the cap: counted as held, left alone
    client.zadd(keys.permits("k2"), {"gone": 0, "live": 0})  # at the cap: checked
    gates = gw.run(fair.gates(space, keys, [], ["k1", "k2", "k3"]))
    assert (gates.cap, gates.held) == (2, {"k1": 1, "k2": 1, "k3": 0})
    assert client.zrange(keys.permits("k2"), 0, -1) == [b"live"]
    assert client.zcard(keys.permits("k1")) == 1


def test_gates_read_the_limits_and_redis_clock(gw: Gateway, space: KeySpace, keys: CapabilityKeys) -> None:
    gw.run(limits.define(space, "api", 600.0, 5))
    gates = gw.run(fair.gates(space, keys, ["api", "missing"], []))
    assert gates.limits["missing"] is None
    state = gates.limits["api"]
    assert state is not None and state.available(gates.now_ms) == 5
    assert gates.now_ms > 1e12


def test_take_many_takes_a_sum_at_once_and_refunds(gw: Gateway, space: KeySpace) -> None:
    gw.run(limits.define(space, "api", 60.0, 5))  # 1 unit/s, burst 5
    gw.run(limits.define(space, "tpm", 6000.0, 100))
    api, tpm = space.limit("api"), space.limit("tpm")
    assert gw.run(limits.take_many([(api, 4), (tpm, 90)])) == [Taken.TAKEN, Taken.TAKEN]
    assert gw.run(limits.take_many([(api, 2), (tpm, 10)])) == [Taken.NOT_NOW, Taken.TAKEN]  # 1 left in api
    assert gw.run(limits.take_many([(tpm, -100)])) == [Taken.TAKEN]
    assert gw.run(limits.take_many([(api, 1), (space.limit("nope"), 1)])) == [Taken.TAKEN, Taken.UNKNOWN]
    assert gw.run(limits.take_many([])) == []


def test_a_tenant_held_back_by_its_key_banks_no_credit(
    gw: Gateway, client: redis.Redis, space: KeySpace, keys: CapabilityKeys
) -> None:
    from dispatcher.fleet.fairgate import FairGate

    client.hset(keys.caps, "per_key", 1)
    client.hset(keys.index, "holder", "1-0")  # a task of key k runs: k is at its cap
    client.zadd(keys.permits("k"), {"holder": 0})
    submit(gw, keys, "a", 40, concurrency_key="k")
    submit(gw, keys, "b", 60)
    gate = FairGate(gw, space, 8, LIMIT)

    def admitted() -> list[str]:
        out = []
        for entry_id, fields in client.xrange(keys.stream):
            out.append(str(codec.decode_entry("fair", "0-0", fields, LIMIT).task.fairness_key))
            client.xdel(keys.stream, entry_id)
        return out

    for _ in range(5):
        gate.admit([keys])
        assert admitted() == ["b"] * 8  # a is held back: b takes every turn (no head-of-line blocking)
    client.hset(keys.caps, "per_key", 100)  # k has room again
    gate.admit([keys])
    shares = admitted()
    # a rejoins at b's last start (one turn ahead at most), then one turn each: not 40 turns of banked credit.
    assert 4 <= shares.count("a") <= 5, shares
