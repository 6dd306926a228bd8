"""Every Lua transition (submit, settle, retry, bury, promote), one test per return code, on fakeredis and Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from helpers import keyspace

from dispatcher import Task
from dispatcher.store import codec, streams
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, CapabilityKeys, KeySpace
from dispatcher.store.scripts import Settle

LIMIT = 64 * 1024
TTL_MS = 60_000


@pytest.fixture
def keys(prefix: str) -> CapabilityKeys:
    return KeySpace(prefix).capability("echo")


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def new_task(payload: Any = None, **options: Any) -> tuple[Task, bytes]:
    task = Task(capability="echo", payload=payload, **options)
    return task, codec.encode_task(task, LIMIT)


def submit(gw: Gateway, keys: CapabilityKeys, *items: streams.Enqueue) -> list[str]:
    return gw.run(streams.submit([(keys, list(items))], TTL_MS))


def queued(gw: Gateway, keys: CapabilityKeys, payload: Any = None) -> tuple[Task, bytes, str]:
    task, blob = new_task(payload)
    (entry_id,) = submit(gw, keys, streams.Enqueue(task.id, blob, 0, None))
    return task, blob, entry_id


def read_one(gw: Gateway, keys: CapabilityKeys, consumer: str) -> tuple[str, dict[bytes, bytes]]:
    gw.run(streams.ensure_groups([keys.stream]))
    ((_, entries),) = gw.run(streams.read([keys.stream], consumer, 1, None))
    ((entry_id, fields),) = entries
    return text(entry_id), fields


def running(gw: Gateway, keys: CapabilityKeys, consumer: str = "c1") -> tuple[Task, bytes, str]:
    task, blob, entry_id = queued(gw, keys)
    read_id, _ = read_one(gw, keys, consumer)
    assert read_id == entry_id
    return task, blob, entry_id


def raw(gw: Gateway, command: tuple[Any, ...]) -> Any:
    """The script's raw reply (its return code), not mapped to an outcome."""
    (reply,) = gw.send([command])
    if isinstance(reply, Exception):
        raise reply
    return reply


def record(status: str = "succeeded", value: Any = 42) -> bytes:
    return codec.encode_outcome(codec.Outcome(status=status, value=value, worker="c1"))


def snapshot(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Everything under ``prefix``, by key: to assert that a refused transition changed nothing."""
    out: dict[str, Any] = {}
    for key in sorted(keyspace(client, prefix)):
        kind = text(client.type(key))
        if kind == "stream":
            pending = client.xpending_range(key, GROUP, "-", "+", 100) if client.xinfo_groups(key) else []
            out[key] = (client.xrange(key), [(p["message_id"], p["consumer"]) for p in pending])
        elif kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = client.get(key)
    return out


def pending_ids(client: redis.Redis, keys: CapabilityKeys) -> list[str]:
    return [text(p["message_id"]) for p in client.xpending_range(keys.stream, GROUP, "-", "+", 100)]


# ---- submit ---------------------------------------------------------------------------------------------------


def test_submit_now_adds_an_entry_and_indexes_it(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob, entry_id = queued(gw, keys, {"x": 1})
    ((stream_id, fields),) = client.xrange(keys.stream)
    assert text(stream_id) == entry_id
    assert fields == {b"v": b"1", b"task": blob, b"attempt": b"1", b"reclaims": b"0"}
    assert client.hgetall(keys.index) == {task.id.encode(): entry_id.encode()}


def test_submit_delayed_writes_a_delayed_record(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob = new_task()
    due_ms = int(time.time() * 1000) + 60_000
    assert submit(gw, keys, streams.Enqueue(task.id, blob, due_ms, None)) == ["d"]
    assert client.xlen(keys.stream) == 0
    assert client.hget(keys.index, task.id) == b"d1:0:" + blob
    assert client.zrange(keys.delayed, 0, -1, withscores=True) == [(task.id.encode(), float(due_ms))]


def test_submit_dedupes_by_task_id(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob, _ = queued(gw, keys)
    assert submit(gw, keys, streams.Enqueue(task.id, blob, 0, None)) == [f"={task.id}"]
    assert client.xlen(keys.stream) == 1


def test_submit_dedupes_a_delayed_task_id(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob = new_task()
    due_ms = int(time.time() * 1000) + 60_000
    submit(gw, keys, streams.Enqueue(task.id, blob, due_ms, None))
    assert submit(gw, keys, streams.Enqueue(task.id, blob, 0, None)) == [f"={task.id}"]
    assert client.xlen(keys.stream) == 0


def test_submit_dedupes_by_idempotency_key(gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str) -> None:
    first, first_blob = new_task()
    second, second_blob = new_task()
    (entry_id,) = submit(gw, keys, streams.Enqueue(first.id, first_blob, 0, "k1"))
    before = snapshot(client, prefix)
    assert submit(gw, keys, streams.Enqueue(second.id, second_blob, 0, "k1")) == [f"={first.id}"]
    assert snapshot(client, prefix) == before
    assert client.get(keys.idempotency("k1")) == first.id.encode()
    assert 0 < client.pttl(keys.idempotency("k1")) <= TTL_MS
    assert entry_id.count("-") == 1


def test_submit_batch_replies_in_order_with_a_duplicate_key_inside(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    (a, a_blob), (b, b_blob), (c, c_blob) = new_task(), new_task(), new_task()
    due_ms = int(time.time() * 1000) + 60_000
    replies = submit(
        gw,
        keys,
        streams.Enqueue(a.id, a_blob, 0, "same"),
        streams.Enqueue(b.id, b_blob, due_ms, None),
        streams.Enqueue(c.id, c_blob, 0, "same"),
    )
    assert replies[1:] == ["d", f"={a.id}"]
    assert [text(i) for i, _ in client.xrange(keys.stream)] == [replies[0]]


# ---- settle ---------------------------------------------------------------------------------------------------


def test_settle_by_owner_returns_1_stores_result_and_cleans_up(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, _, entry_id = running(gw, keys)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.channel(task.id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    rec = record()
    assert raw(gw, streams.settle_call(keys, entry_id, "c1", task.id, rec, TTL_MS, "succeeded")) == 1
    assert client.get(keys.result(task.id)) == rec
    assert 0 < client.pttl(keys.result(task.id)) <= TTL_MS
    assert client.xlen(keys.stream) == 0
    assert pending_ids(client, keys) == []
    assert not client.hexists(keys.index, task.id)
    assert keyspace(client, prefix) == {keys.stream, keys.result(task.id)}
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and message["data"] == rec  # the announcement carries the record


def test_settle_by_another_consumer_returns_0_and_changes_nothing(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, _, entry_id = running(gw, keys, "c1")
    before = snapshot(client, prefix)
    assert raw(gw, streams.settle_call(keys, entry_id, "c2", task.id, record(), TTL_MS, "succeeded")) == 0
    assert snapshot(client, prefix) == before
    assert gw.run(streams.transitions([streams.settle_call(keys, entry_id, "c2", task.id, record(), 1, "x")])) == [
        Settle.LEASE_LOST
    ]


def test_settle_of_an_entry_not_pending_returns_0(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, _, entry_id = queued(gw, keys)
    gw.run(streams.ensure_groups([keys.stream]))  # created, never read: not pending for anyone
    before = snapshot(client, prefix)
    assert raw(gw, streams.settle_call(keys, entry_id, "c1", task.id, record(), TTL_MS, "succeeded")) == 0
    assert snapshot(client, prefix) == before


def test_settle_without_a_group_returns_0(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, _, entry_id = queued(gw, keys)
    assert raw(gw, streams.settle_call(keys, entry_id, "c1", task.id, record(), TTL_MS, "succeeded")) == 0
    assert client.get(keys.result(task.id)) is None


def test_settle_after_a_retry_replaced_the_index_keeps_the_new_index(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, _blob, entry_id = running(gw, keys)
    client.hset(keys.index, task.id, "9999999999999-0")  # the index now names another entry: not ours to delete
    assert raw(gw, streams.settle_call(keys, entry_id, "c1", task.id, record(), TTL_MS, "succeeded")) == 1
    assert client.hget(keys.index, task.id) == b"9999999999999-0"


# ---- retry ----------------------------------------------------------------------------------------------------


def test_retry_now_adds_a_fresh_entry_with_the_next_attempt(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, blob, entry_id = running(gw, keys)
    new_id = text(raw(gw, streams.retry_call(keys, entry_id, "c1", task.id, blob, 2, 1, 0)))
    assert new_id != entry_id
    ((stream_id, fields),) = client.xrange(keys.stream)
    assert text(stream_id) == new_id
    assert fields == {b"v": b"1", b"task": blob, b"attempt": b"2", b"reclaims": b"1"}
    assert client.hget(keys.index, task.id) == new_id.encode()
    assert pending_ids(client, keys) == []
    delivery = codec.decode_entry("echo", new_id, fields, LIMIT)
    assert (delivery.attempt, delivery.reclaims, delivery.task.id) == (2, 1, task.id)


def test_retry_delayed_writes_a_delayed_record(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob, entry_id = running(gw, keys)
    due_ms = int(time.time() * 1000) + 60_000
    assert raw(gw, streams.retry_call(keys, entry_id, "c1", task.id, blob, 3, 2, due_ms)) == b"d"
    assert client.xlen(keys.stream) == 0
    assert pending_ids(client, keys) == []
    assert client.hget(keys.index, task.id) == b"d3:2:" + blob
    assert client.zscore(keys.delayed, task.id) == float(due_ms)


def test_retry_by_another_consumer_returns_0(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, "c1")
    before = snapshot(client, prefix)
    assert raw(gw, streams.retry_call(keys, entry_id, "c2", task.id, blob, 2, 0, 0)) == 0
    assert snapshot(client, prefix) == before


def test_retry_only_if_owner_dead_returns_2_while_its_heartbeat_exists(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, "c1")
    client.set(keys.heartbeat("c1"), "c1", px=60_000)
    before = snapshot(client, prefix)
    call = streams.retry_call(keys, entry_id, "c1", task.id, blob, 1, 1, 0, only_if_owner_dead=True)
    assert raw(gw, call) == 2
    assert snapshot(client, prefix) == before
    assert gw.run(streams.transitions([call])) == [Settle.OWNER_ALIVE]
    client.delete(keys.heartbeat("c1"))
    assert gw.run(streams.transitions([call])) == [Settle.DONE]
    ((_, fields),) = client.xrange(keys.stream)
    assert (fields[b"attempt"], fields[b"reclaims"]) == (b"1", b"1")


# ---- bury -----------------------------------------------------------------------------------------------------


def letter(task_id: str, blob: bytes) -> list[tuple[str, bytes | str | int]]:
    return [("task_id", task_id), ("reason", "max_retries"), ("task", blob), ("attempt", 4)]


def test_bury_by_owner_dead_letters_and_stores_a_dead_result(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.channel(task.id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    rec = codec.encode_outcome(codec.Outcome(status="dead", reason="max_retries", error_type="ValueError"))
    call = streams.bury_call(keys, entry_id, "c1", task.id, rec, TTL_MS, 100, letter(task.id, blob))
    assert raw(gw, call) == 1
    ((_, fields),) = client.xrange(keys.dead)
    assert fields == {b"task_id": task.id.encode(), b"reason": b"max_retries", b"task": blob, b"attempt": b"4"}
    outcome = codec.decode_outcome(client.get(keys.result(task.id)), LIMIT)
    assert (outcome.status, outcome.reason, outcome.error_type) == ("dead", "max_retries", "ValueError")
    assert client.xlen(keys.stream) == 0
    assert pending_ids(client, keys) == []
    assert keyspace(client, prefix) == {keys.stream, keys.dead, keys.result(task.id)}
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and message["data"] == rec


def test_bury_an_undecodable_entry_writes_no_result(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    _task, _blob, entry_id = running(gw, keys)
    call = streams.bury_call(keys, entry_id, "c1", "", b"", TTL_MS, 100, [("reason", "decode_error")])
    assert raw(gw, call) == 1
    assert client.xlen(keys.dead) == 1
    assert client.xlen(keys.stream) == 0
    # Without a task id the index cannot be cleaned here; the result key is never written.
    assert keyspace(client, prefix) == {keys.stream, keys.dead, keys.index}


def test_bury_by_another_consumer_returns_0(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, "c1")
    before = snapshot(client, prefix)
    call = streams.bury_call(keys, entry_id, "c2", task.id, record("dead"), TTL_MS, 100, letter(task.id, blob))
    assert raw(gw, call) == 0
    assert snapshot(client, prefix) == before


def test_bury_only_if_owner_dead_returns_2_while_its_heartbeat_exists(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, "c1")
    client.set(keys.heartbeat("c1"), "c1", px=60_000)
    before = snapshot(client, prefix)
    rec = record("dead")
    call = streams.bury_call(keys, entry_id, "c1", task.id, rec, TTL_MS, 100, letter(task.id, blob), True)
    assert raw(gw, call) == 2
    assert snapshot(client, prefix) == before


# ---- promote --------------------------------------------------------------------------------------------------


def test_promote_moves_only_due_tasks_and_keeps_their_counts(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    now_ms = int(time.time() * 1000)
    due, due_blob, entry_id = running(gw, keys)
    gw.run(streams.transitions([streams.retry_call(keys, entry_id, "c1", due.id, due_blob, 3, 2, now_ms + 1_000)]))
    later, later_blob = new_task()
    submit(gw, keys, streams.Enqueue(later.id, later_blob, now_ms + 60_000, None))

    assert gw.run(streams.promote(keys, now_ms, 100)) == 0  # nothing due yet
    assert gw.run(streams.promote(keys, now_ms + 2_000, 100)) == 1
    ((new_id, fields),) = client.xrange(keys.stream)
    assert fields == {b"v": b"1", b"task": due_blob, b"attempt": b"3", b"reclaims": b"2"}
    assert client.hget(keys.index, due.id) == new_id
    assert client.zrange(keys.delayed, 0, -1) == [later.id.encode()]
    assert client.hget(keys.index, later.id) == b"d1:0:" + later_blob


def test_promote_respects_its_limit(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    now_ms = int(time.time() * 1000)
    items = []
    for i in range(3):
        task, blob = new_task(i)
        items.append(streams.Enqueue(task.id, blob, now_ms + 10 + i, None))
    submit(gw, keys, *items)
    assert gw.run(streams.promote(keys, now_ms + 100, 2)) == 2
    assert client.zcard(keys.delayed) == 1
    assert gw.run(streams.promote(keys, now_ms + 100, 2)) == 1
    assert [codec.decode_entry("echo", "x", f, LIMIT).task.payload for _, f in client.xrange(keys.stream)] == [0, 1, 2]


def test_promote_drops_a_due_id_without_a_delayed_record(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    client.zadd(keys.delayed, {"gone": 1})
    assert gw.run(streams.promote(keys, int(time.time() * 1000), 100)) == 0
    assert client.zcard(keys.delayed) == 0
    assert not client.exists(keys.stream)


def test_submit_refuses_an_id_whose_result_is_still_kept(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, blob, entry_id = running(gw, keys)
    assert raw(gw, streams.settle_call(keys, entry_id, "c1", task.id, record(), TTL_MS, "succeeded")) == 1
    # A client retry re-sends the submit after its reply was lost and the task already ran: not added again.
    assert submit(gw, keys, streams.Enqueue(task.id, blob, 0, None)) == ["=" + task.id]
    assert client.xlen(keys.stream) == 0


def test_a_re_sent_settle_finds_its_own_record_and_returns_1(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, _, entry_id = running(gw, keys)
    rec = record()
    call = streams.settle_call(keys, entry_id, "c1", task.id, rec, TTL_MS, "succeeded")
    assert raw(gw, call) == 1
    assert raw(gw, call) == 1, "the same record is already stored: settled, not a lost lease"
    other = streams.settle_call(keys, entry_id, "c1", task.id, record(value=7), TTL_MS, "succeeded")
    assert raw(gw, other) == 0, "another result for a settled entry is a lost lease"
    assert client.get(keys.result(task.id)) == rec
    many = gw.run(streams.transitions([call, call]))
    assert [r.name for r in many] == ["DONE", "DONE"]  # the batched settle_many path agrees
