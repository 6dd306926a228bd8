"""The fairness lane on fakeredis and Redis: a task with a ``fairness_key`` that comes back from a delay, a retry's
backoff or the dead letters waits in the rejoin set (``promote.lua``, ``requeue.lua``, ``submit.lua``'s delayed
branch), and the fair gate moves it into its tenant's queue at its rank (``rejoin.lua``), from which it is
admitted by the same rules as at submit: its key's permit and its limits' units taken again."""

from __future__ import annotations

from typing import Any

import redis
from helpers import keyspace
from script_kit import tasks_on_stream

from dispatcher import Task
from dispatcher.fleet.fairgate import FairGate
from dispatcher.store import codec, fair, letters, limits, streams, transitions, wire
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.transitions import Requeue
from dispatcher.store.wire import Applied, Enqueued, Requeued

LIMIT = 64 * 1024
WINDOW = 8


def task(tenant: str = "a", **options: Any) -> Task:
    return Task(capability="echo", payload=options.pop("payload", 1), fairness_key=tenant, **options)


def enqueue(t: Task, delay_ms: int = 0) -> streams.Enqueue:
    blob = codec.encode_task(t, LIMIT)
    return streams.Enqueue(
        t.id, blob, delay_ms, version=codec.version_of(t), priority=t.priority, fairness_key=t.fairness_key
    )


def submit(gw: Gateway, keys: CapabilityKeys, *items: streams.Enqueue) -> list[Enqueued]:
    return gw.run(streams.submit([(keys, list(items))], 60_000, WINDOW))


def due_now(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> int:
    """Every delayed task made due (its due time moved into the past), then promoted; how many moved."""
    for member in client.zrange(keys.delayed, 0, -1):
        client.zadd(keys.delayed, {member: 1})
    return gw.run(streams.promote(keys, 100, WINDOW))


def gate(gw: Gateway, keys: CapabilityKeys) -> FairGate:
    return FairGate(gw, KeySpace(keys.stream.split(":", 1)[0]), WINDOW, LIMIT)


def members(client: redis.Redis, key: str) -> list[str]:
    return [m.decode() for m in client.zrange(key, 0, -1)]


def on_stream(client: redis.Redis, keys: CapabilityKeys) -> list[str]:
    """The task ids of the stream's entries, in order."""
    return [t.id for t in tasks_on_stream(client, keys)]


def test_a_delayed_tenant_task_rejoins_its_tenant_when_due(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    t = task(priority=4)
    assert submit(gw, keys, enqueue(t, delay_ms=60_000)) == [Enqueued(t.id, added=True, delayed=True)]
    place = wire.place(client.hget(keys.index, t.id))
    assert isinstance(place, wire.Delayed) and place.lane == b"f4"
    assert not client.exists(keys.fair("a")) and not client.exists(keys.tenants)  # not waiting yet
    assert due_now(gw, client, keys) == 1
    assert members(client, keys.rejoin) == [t.id] and client.xlen(keys.stream) == 0
    assert gw.run(fair.rejoin(keys, 10, LIMIT)) == 1
    assert members(client, keys.fair("a")) == [t.id] and members(client, keys.tenants) == ["a"]
    assert not client.exists(keys.rejoin)
    assert gate(gw, keys).admit([keys]) == (1, 0)
    assert on_stream(client, keys) == [t.id]


def test_the_gate_moves_rejoining_tasks_and_admits_them_in_one_pass(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    first, second = task("a"), task("b")
    submit(gw, keys, enqueue(first, delay_ms=60_000), enqueue(second, delay_ms=60_000))
    due_now(gw, client, keys)
    assert gate(gw, keys).admit([keys], [[]], [2]) == (2, 0)  # no tenant waited when the pass began
    assert sorted(on_stream(client, keys)) == sorted([first.id, second.id])
    assert not client.exists(keys.rejoin, keys.tenants, keys.fair("a"), keys.fair("b"))


def test_a_rejoining_task_keeps_its_rank_in_its_tenant_s_queue(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    queued = [task(priority=0, payload=i) for i in range(3)]
    submit(gw, keys, *(enqueue(t) for t in queued))
    urgent = task(priority=9)
    submit(gw, keys, enqueue(urgent, delay_ms=60_000))
    due_now(gw, client, keys)
    gw.run(fair.rejoin(keys, 10, LIMIT))
    assert members(client, keys.fair("a"))[0] == urgent.id  # ranked 9 levels ahead of the older priority-0 tasks


def running(gw: Gateway, client: redis.Redis, keys: CapabilityKeys, t: Task) -> tuple[bytes, str]:
    """``t`` submitted, admitted by the fair gate and read by consumer c1."""
    submit(gw, keys, enqueue(t))
    gate(gw, keys).admit([keys])
    gw.run(streams.ensure_groups([keys.stream]))
    ((_, entries),) = gw.run(streams.read([keys.stream], "c1", 1, None))
    return codec.encode_task(t, LIMIT), entries[0][0]


def retry(keys: CapabilityKeys, t: Task, blob: bytes, entry_id: str, lane: str) -> Requeue:
    return Requeue(keys, entry_id, "c1", t.id, blob, codec.version_of(t), attempt=2, reclaims=0, delay_ms=0, lane=lane)


def test_a_retried_keyed_tenant_task_waits_for_its_key_s_permit_again(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    client.hset(keys.caps, "per_key", 1)
    t = task(concurrency_key="repo-1")
    blob, entry_id = running(gw, client, keys, t)
    assert members(client, keys.permits("repo-1")) == [t.id]
    other = task("b", concurrency_key="repo-1")
    submit(gw, keys, enqueue(other))
    assert gate(gw, keys).admit([keys]) == (0, 1)  # repo-1 is at its cap while t runs
    assert gw.run(transitions.record([retry(keys, t, blob, entry_id, "f0")])) == [Applied.DONE]
    assert client.xlen(keys.stream) == 0 and due_now(gw, client, keys) == 1
    assert gate(gw, keys).admit([keys]) == (1, 1)  # its permit lapsed in the backoff: one of the two goes, not both
    assert len(on_stream(client, keys)) == 1
    assert client.zcard(keys.fair("a")) + client.zcard(keys.fair("b")) == 1
    place = wire.place(client.hget(keys.index, t.id))
    attempt = place.attempt if isinstance(place, wire.Delayed) else int(client.xrange(keys.stream)[0][1][b"attempt"])
    assert attempt == 2  # the attempt travels through the rejoin


def test_a_retried_tenant_task_takes_its_units_again(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    space = KeySpace(prefix)
    client.hset(space.limit("api").state, mapping={"rate_per_min": 60, "burst": 1})  # 1 unit, then 1 per second
    t = task(rate_limits={"api": 1})
    blob, entry_id = running(gw, client, keys, t)  # takes the one unit
    gw.run(transitions.record([retry(keys, t, blob, entry_id, "f0")]))
    due_now(gw, client, keys)
    assert gate(gw, keys).admit([keys]) == (0, 1)  # no unit left: it waits in its tenant's queue
    assert members(client, keys.fair("a")) == [t.id] and client.xlen(keys.stream) == 0
    assert gw.run(limits.take(space.limit("api"), 1))[0] is limits.Taken.NOT_NOW


def letter(client: redis.Redis, keys: CapabilityKeys, t: Task) -> str:
    fields = {"v": "3", "task_id": t.id, "task": codec.encode_task(t, LIMIT), "reason": "max_retries"}
    return client.xadd(keys.dead, fields).decode()  # type: ignore[no-any-return]


def test_a_requeued_tenant_letter_rejoins_its_tenant(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    t = task("t-9", priority=2)
    letter_id = letter(client, keys, t)
    assert gw.run(letters.requeue(keys, [(letter_id, t.id, "f2")], WINDOW)) == [Requeued.REQUEUED]
    assert client.xlen(keys.dead) == 0 and client.xlen(keys.stream) == 0
    assert members(client, keys.rejoin) == [t.id]
    assert gate(gw, keys).admit([keys]) == (1, 0)
    assert on_stream(client, keys) == [t.id]


def test_rejoin_drops_a_settled_task_and_streams_one_without_a_tenant(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    gone, bad = task(), task()
    submit(gw, keys, enqueue(gone, delay_ms=60_000))
    due_now(gw, client, keys)
    client.hdel(keys.index, gone.id)  # settled or cancelled elsewhere
    blob = codec.encode_task(Task(capability="echo", payload=1), LIMIT)  # holds no fairness_key
    client.hset(keys.index, bad.id, wire.delayed_record(wire.Delayed(b"3", 1, 0, blob, b"f0")))
    client.zadd(keys.rejoin, {bad.id: 5})
    assert gw.run(fair.rejoin(keys, 10, LIMIT)) == 1
    assert not client.exists(keys.rejoin, keys.tenants)
    ((entry_id, _),) = client.xrange(keys.stream)
    assert client.hget(keys.index, bad.id) == entry_id  # onto the stream: its worker dead-letters it
    assert client.hget(keys.index, gone.id) is None


def test_nothing_of_the_lane_is_left_once_rejoined_tasks_ran(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    t = task(concurrency_key="repo-1", rate_limits={"api": 1})
    client.hset(KeySpace(prefix).limit("api").state, mapping={"rate_per_min": 6000, "burst": 10})
    client.hset(keys.caps, "per_key", 1)
    submit(gw, keys, enqueue(t, delay_ms=60_000))
    due_now(gw, client, keys)
    gate(gw, keys).admit([keys])
    gw.run(streams.ensure_groups([keys.stream]))
    ((_, entries),) = gw.run(streams.read([keys.stream], "c1", 1, None))
    client.xack(keys.stream, "workers", entries[0][0])
    client.xdel(keys.stream, entries[0][0])
    client.hdel(keys.index, t.id)
    left = keyspace(client, prefix) - {keys.stream, keys.caps, KeySpace(prefix).limit("api").state}
    assert left <= {keys.permits("repo-1")}  # at most a stale permit, which count_permits removes
