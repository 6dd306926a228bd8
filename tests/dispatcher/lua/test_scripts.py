"""Every Lua transition (submit, settle, retry, bury, promote), one test per return code, on fakeredis and Redis;
and the throughput counts they keep.

Transitions are built as the typed values the worker and the reaper use (``dispatcher.store.transitions``) and
recorded through ``transitions.record``; ``raw`` shows a script's own reply for the return-code tests."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from helpers import keyspace

from dispatcher import Task
from dispatcher.store import codec, streams, throughput, transitions, wire
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, CapabilityKeys, KeySpace
from dispatcher.store.transitions import Bury, Requeue, Settle, Transition
from dispatcher.store.wire import Applied, Enqueued

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


def submit(gw: Gateway, keys: CapabilityKeys, *items: streams.Enqueue) -> list[Enqueued]:
    return gw.run(streams.submit([(keys, list(items))], TTL_MS))


def queued(gw: Gateway, keys: CapabilityKeys, payload: Any = None, **options: Any) -> tuple[Task, bytes, str]:
    task, blob = new_task(payload, **options)
    item = streams.Enqueue(task.id, blob, version=codec.version_of(task), store_result=task.store_result)
    assert submit(gw, keys, item) == [Enqueued(task.id, added=True)]
    ((entry_id, _),) = gw.client.xrevrange(keys.stream, count=1)
    return task, blob, text(entry_id)


def read_one(gw: Gateway, keys: CapabilityKeys, consumer: str) -> tuple[str, dict[bytes, bytes]]:
    gw.run(streams.ensure_groups([keys.stream]))
    ((_, entries),) = gw.run(streams.read([keys.stream], consumer, 1, None))
    ((entry_id, fields),) = entries
    return text(entry_id), fields


def running(gw: Gateway, keys: CapabilityKeys, consumer: str = "c1", **options: Any) -> tuple[Task, bytes, str]:
    task, blob, entry_id = queued(gw, keys, **options)
    read_id, _ = read_one(gw, keys, consumer)
    assert read_id == entry_id
    return task, blob, entry_id


def raw(gw: Gateway, transition: Transition) -> Any:
    """The script's raw reply (its return code), not mapped to an outcome."""
    (command,), _ = transitions.plan([transition])
    (reply,) = gw.send([command])
    if isinstance(reply, Exception):
        raise reply
    return reply[0] if isinstance(transition, Settle) else reply


def record_all(gw: Gateway, *batch: Transition) -> list[Applied | Exception]:
    return gw.run(transitions.record(batch))


def settle(keys: CapabilityKeys, entry_id: str, owner: str, task_id: str, rec: bytes | None) -> Settle:
    return Settle(keys, entry_id, owner, task_id, rec, TTL_MS)


def requeue(keys: CapabilityKeys, entry_id: str, owner: str, task: Task, blob: bytes, **counts: Any) -> Requeue:
    options = {"attempt": 2, "reclaims": 0, "delay_ms": 0, "only_if_owner_dead": False, **counts}
    return Requeue(keys, entry_id, owner, task.id, blob, codec.version_of(task), **options)


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


def test_submit_of_a_task_that_keeps_no_result_writes_version_2(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    queued(gw, keys, store_result=False)
    ((_, fields),) = client.xrange(keys.stream)
    assert fields[b"v"] == b"2"
    assert codec.decode_entry("echo", "1-0", fields, LIMIT).task.store_result is False


def test_submit_delayed_writes_a_delayed_record(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob = new_task()
    before_ms = server_ms(client)
    replies = submit(gw, keys, streams.Enqueue(task.id, blob, 60_000))
    after_ms = server_ms(client)
    assert replies == [Enqueued(task.id, added=True, delayed=True)]
    assert client.xlen(keys.stream) == 0
    assert client.hget(keys.index, task.id) == b"d1:0:" + blob
    assert wire.place(client.hget(keys.index, task.id)) == wire.Delayed(b"1", 1, 0, blob)
    ((member, due),) = client.zrange(keys.delayed, 0, -1, withscores=True)
    assert member == task.id.encode()
    assert before_ms + 60_000 <= due <= after_ms + 60_000  # the delay is added to Redis' clock


def test_submit_delayed_of_version_2_keeps_its_version_in_the_record(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, blob = new_task(store_result=False)
    submit(gw, keys, streams.Enqueue(task.id, blob, 60_000, version=b"2", store_result=False))
    value = client.hget(keys.index, task.id)
    assert value == b"d1:0:2:" + blob
    assert wire.place(value) == wire.Delayed(b"2", 1, 0, blob)
    assert wire.delayed_record(wire.Delayed(b"2", 1, 0, blob)) == value


def test_submit_dedupes_by_task_id(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob, _ = queued(gw, keys)
    assert submit(gw, keys, streams.Enqueue(task.id, blob)) == [Enqueued(task.id, added=False)]
    assert client.xlen(keys.stream) == 1


def test_submit_dedupes_an_id_repeated_inside_one_batch(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob = new_task()
    replies = submit(gw, keys, streams.Enqueue(task.id, blob), streams.Enqueue(task.id, blob))
    assert replies == [Enqueued(task.id, added=True), Enqueued(task.id, added=False)]
    assert client.xlen(keys.stream) == 1


def test_submit_dedupes_a_delayed_task_id(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob = new_task()
    submit(gw, keys, streams.Enqueue(task.id, blob, 60_000))
    assert submit(gw, keys, streams.Enqueue(task.id, blob)) == [Enqueued(task.id, added=False)]
    assert client.xlen(keys.stream) == 0


def test_submit_dedupes_by_idempotency_key(gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str) -> None:
    first, first_blob = new_task()
    second, second_blob = new_task()
    assert submit(gw, keys, streams.Enqueue(first.id, first_blob, 0, "k1")) == [Enqueued(first.id, added=True)]
    before = snapshot(client, prefix)
    assert submit(gw, keys, streams.Enqueue(second.id, second_blob, 0, "k1")) == [Enqueued(first.id, added=False)]
    assert snapshot(client, prefix) == before
    assert client.get(keys.idempotency("k1")) == first.id.encode()
    assert 0 < client.pttl(keys.idempotency("k1")) <= TTL_MS


def test_submit_batch_replies_in_order_with_a_duplicate_key_inside(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    (a, a_blob), (b, b_blob), (c, c_blob) = new_task(), new_task(), new_task()
    replies = submit(
        gw,
        keys,
        streams.Enqueue(a.id, a_blob, 0, "same"),
        streams.Enqueue(b.id, b_blob, 60_000),
        streams.Enqueue(c.id, c_blob, 0, "same"),
    )
    assert replies == [Enqueued(a.id, True), Enqueued(b.id, True, delayed=True), Enqueued(a.id, False)]
    ((entry_id, _),) = client.xrange(keys.stream)
    assert client.hget(keys.index, a.id) == entry_id


def test_submit_refuses_an_id_whose_result_is_still_kept(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, blob, entry_id = running(gw, keys)
    assert raw(gw, settle(keys, entry_id, "c1", task.id, record())) == 1
    # A client retry re-sends the submit after its reply was lost and the task already ran: not added again.
    assert submit(gw, keys, streams.Enqueue(task.id, blob)) == [Enqueued(task.id, added=False)]
    assert client.xlen(keys.stream) == 0


# ---- settle ---------------------------------------------------------------------------------------------------


def test_settle_by_owner_returns_1_stores_result_and_cleans_up(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, _, entry_id = running(gw, keys)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.channel(task.id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    rec = record()
    assert raw(gw, settle(keys, entry_id, "c1", task.id, rec)) == 1
    assert client.get(keys.result(task.id)) == rec
    assert 0 < client.pttl(keys.result(task.id)) <= TTL_MS
    assert client.xlen(keys.stream) == 0
    assert pending_ids(client, keys) == []
    assert not client.hexists(keys.index, task.id)
    assert keyspace(client, prefix) == {keys.stream, keys.result(task.id), keys.throughput}
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and message["data"] == rec  # the announcement carries the record


def test_settle_without_a_record_stores_and_announces_nothing(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, _, entry_id = running(gw, keys, store_result=False)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.channel(task.id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    assert record_all(gw, settle(keys, entry_id, "c1", task.id, None)) == [Applied.DONE]
    assert keyspace(client, prefix) == {keys.stream, keys.throughput}
    assert client.xlen(keys.stream) == 0 and pending_ids(client, keys) == []
    assert pubsub.get_message(timeout=0.2) is None
    pubsub.close()


def test_settle_by_another_consumer_returns_0_and_changes_nothing(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, _, entry_id = running(gw, keys, "c1")
    before = snapshot(client, prefix)
    assert raw(gw, settle(keys, entry_id, "c2", task.id, record())) == 0
    assert snapshot(client, prefix) == before
    assert record_all(gw, settle(keys, entry_id, "c2", task.id, record())) == [Applied.LEASE_LOST]


def test_settle_of_a_mixed_batch_records_the_held_entry_and_refuses_the_lost_one(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    held, _, held_id = running(gw, keys, "c1")
    lost, _, lost_id = running(gw, keys, "c2")  # another worker holds it: for c1 it is a lost lease
    kept, _, kept_id = running(gw, keys, "c1")  # held by c1 too, not in this batch: must stay untouched
    replies = record_all(
        gw, settle(keys, lost_id, "c1", lost.id, record(value=1)), settle(keys, held_id, "c1", held.id, record(value=2))
    )
    assert replies == [Applied.LEASE_LOST, Applied.DONE]
    assert client.get(keys.result(lost.id)) is None
    assert codec.decode_outcome(client.get(keys.result(held.id)), LIMIT).value == 2
    assert sorted(pending_ids(client, keys)) == sorted([lost_id, kept_id])
    assert {text(i) for i, _ in client.xrange(keys.stream)} == {lost_id, kept_id}
    assert client.hexists(keys.index, lost.id) and client.hexists(keys.index, kept.id)
    assert not client.hexists(keys.index, held.id)


def test_settle_of_a_large_batch_is_split_and_each_reply_maps_to_its_task(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    batch = []
    for i in range(transitions.SETTLE_CHUNK + 5):
        task, _, entry_id = running(gw, keys)
        batch.append(settle(keys, entry_id, "c1", task.id, record(value=i)))
    commands, _ = transitions.plan(batch)
    assert len(commands) == 2
    assert record_all(gw, *batch) == [Applied.DONE] * len(batch)
    assert [codec.decode_outcome(client.get(keys.result(t.task_id)), LIMIT).value for t in batch] == list(
        range(len(batch))
    )
    assert client.xlen(keys.stream) == 0


def test_settle_of_an_entry_not_pending_returns_0(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, _, entry_id = queued(gw, keys)
    gw.run(streams.ensure_groups([keys.stream]))  # created, never read: not pending for anyone
    before = snapshot(client, prefix)
    assert raw(gw, settle(keys, entry_id, "c1", task.id, record())) == 0
    assert snapshot(client, prefix) == before


def test_settle_without_a_group_returns_0(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, _, entry_id = queued(gw, keys)
    assert raw(gw, settle(keys, entry_id, "c1", task.id, record())) == 0
    assert client.get(keys.result(task.id)) is None


def test_a_re_sent_settle_finds_its_own_record_and_returns_1(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, _, entry_id = running(gw, keys)
    rec = record()
    assert raw(gw, settle(keys, entry_id, "c1", task.id, rec)) == 1
    assert raw(gw, settle(keys, entry_id, "c1", task.id, rec)) == 1, "its own record is stored: settled"
    assert raw(gw, settle(keys, entry_id, "c1", task.id, record(value=7))) == 0, "another result: a lost lease"
    assert client.get(keys.result(task.id)) == rec


# ---- retry ----------------------------------------------------------------------------------------------------


def test_retry_now_adds_a_fresh_entry_with_the_next_attempt(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, blob, entry_id = running(gw, keys)
    assert raw(gw, requeue(keys, entry_id, "c1", task, blob, attempt=2, reclaims=1)) == 1
    ((stream_id, fields),) = client.xrange(keys.stream)
    new_id = text(stream_id)
    assert new_id != entry_id
    assert fields == {b"v": b"1", b"task": blob, b"attempt": b"2", b"reclaims": b"1"}
    assert client.hget(keys.index, task.id) == new_id.encode()
    assert pending_ids(client, keys) == []
    delivery = codec.decode_entry("echo", new_id, fields, LIMIT)
    assert (delivery.attempt, delivery.reclaims, delivery.task.id) == (2, 1, task.id)


def test_retry_keeps_the_entry_s_format_version(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob, entry_id = running(gw, keys, store_result=False)
    assert record_all(gw, requeue(keys, entry_id, "c1", task, blob)) == [Applied.DONE]
    ((_, fields),) = client.xrange(keys.stream)
    assert fields[b"v"] == b"2"


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_retry_delayed_writes_a_delayed_record_due_by_redis_clock(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, blob, entry_id = running(gw, keys)
    before = server_ms(client)
    assert raw(gw, requeue(keys, entry_id, "c1", task, blob, attempt=3, reclaims=2, delay_ms=60_000)) == 1
    after = server_ms(client)
    assert client.xlen(keys.stream) == 0
    assert pending_ids(client, keys) == []
    assert client.hget(keys.index, task.id) == b"d3:2:" + blob
    due = client.zscore(keys.delayed, task.id)
    assert due is not None and before + 60_000 <= due <= after + 60_000


def test_retry_by_another_consumer_returns_0(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, "c1")
    before = snapshot(client, prefix)
    assert raw(gw, requeue(keys, entry_id, "c2", task, blob)) == 0
    assert snapshot(client, prefix) == before


def test_retry_only_if_owner_dead_returns_2_while_its_heartbeat_exists(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, "c1")
    client.set(keys.heartbeat("c1"), "c1", px=60_000)
    before = snapshot(client, prefix)
    transition = requeue(keys, entry_id, "c1", task, blob, attempt=1, reclaims=1, only_if_owner_dead=True)
    assert raw(gw, transition) == 2
    assert snapshot(client, prefix) == before
    assert record_all(gw, transition) == [Applied.OWNER_ALIVE]
    client.delete(keys.heartbeat("c1"))
    assert record_all(gw, transition) == [Applied.DONE]
    ((_, fields),) = client.xrange(keys.stream)
    assert (fields[b"attempt"], fields[b"reclaims"]) == (b"1", b"1")


# ---- bury -----------------------------------------------------------------------------------------------------


def letter(task_id: str, blob: bytes) -> tuple[tuple[str, bytes | str | int], ...]:
    return (("task_id", task_id), ("reason", "max_retries"), ("task", blob), ("attempt", 4))


def bury(
    keys: CapabilityKeys, entry_id: str, owner: str, task_id: str, rec: bytes | None, blob: bytes, **kw: Any
) -> Bury:
    return Bury(keys, entry_id, owner, task_id, rec, TTL_MS, 100, letter(task_id, blob), **kw)


def test_bury_by_owner_dead_letters_and_stores_a_dead_result(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.channel(task.id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    rec = codec.encode_outcome(codec.Outcome(status="dead", reason="max_retries", error_type="ValueError"))
    assert raw(gw, bury(keys, entry_id, "c1", task.id, rec, blob)) == 1
    ((_, fields),) = client.xrange(keys.dead)
    assert fields == {b"task_id": task.id.encode(), b"reason": b"max_retries", b"task": blob, b"attempt": b"4"}
    outcome = codec.decode_outcome(client.get(keys.result(task.id)), LIMIT)
    assert (outcome.status, outcome.reason, outcome.error_type) == ("dead", "max_retries", "ValueError")
    assert client.xlen(keys.stream) == 0
    assert pending_ids(client, keys) == []
    assert keyspace(client, prefix) == {keys.stream, keys.dead, keys.result(task.id), keys.throughput}
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and message["data"] == rec


def test_bury_without_a_record_writes_only_the_dead_letter(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, store_result=False)
    assert record_all(gw, bury(keys, entry_id, "c1", task.id, None, blob)) == [Applied.DONE]
    assert keyspace(client, prefix) == {keys.stream, keys.dead, keys.throughput}
    assert client.xlen(keys.dead) == 1 and client.xlen(keys.stream) == 0


def test_bury_with_an_untrusted_id_never_overwrites_another_task_s_result(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    settled, _, settled_entry = running(gw, keys)
    kept = record(value="the real result")
    assert raw(gw, settle(keys, settled_entry, "c1", settled.id, kept)) == 1
    _forged_task, _, forged_entry = running(gw, keys)
    live, _, live_entry = queued(gw, keys)  # queued (not yet read) under its own entry id
    dead = record("dead")
    for victim in (settled.id, live.id):  # an undecodable entry whose bytes name another task's id
        bury_forged = Bury(
            keys, forged_entry, "c1", victim, dead, TTL_MS, 100, (("reason", "decode_error"),), False, False
        )
        assert raw(gw, bury_forged) in (0, 1)
    assert client.get(keys.result(settled.id)) == kept
    assert client.get(keys.result(live.id)) is None
    assert client.hget(keys.index, live.id) == live_entry.encode()
    # With nothing kept and no index field for the id, the dead result is stored: a waiting producer hears of it.
    client.delete(keys.stream, keys.index)
    _task, _, entry = running(gw, keys)
    orphan = "orphan-id"
    assert raw(gw, Bury(keys, entry, "c1", orphan, dead, TTL_MS, 100, (("reason", "decode_error"),), False, False)) == 1
    assert client.get(keys.result(orphan)) == dead


def test_bury_an_undecodable_entry_writes_no_result(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    _task, _blob, entry_id = running(gw, keys)
    transition = Bury(keys, entry_id, "c1", "", None, TTL_MS, 100, (("reason", "decode_error"),))
    assert raw(gw, transition) == 1
    assert client.xlen(keys.dead) == 1
    assert client.xlen(keys.stream) == 0
    # Without a task id the index cannot be cleaned here; the result key is never written.
    assert keyspace(client, prefix) == {keys.stream, keys.dead, keys.index, keys.throughput}


def test_bury_by_another_consumer_returns_0(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, "c1")
    before = snapshot(client, prefix)
    assert raw(gw, bury(keys, entry_id, "c2", task.id, record("dead"), blob)) == 0
    assert snapshot(client, prefix) == before


def test_bury_only_if_owner_dead_returns_2_while_its_heartbeat_exists(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    task, blob, entry_id = running(gw, keys, "c1")
    client.set(keys.heartbeat("c1"), "c1", px=60_000)
    before = snapshot(client, prefix)
    assert raw(gw, bury(keys, entry_id, "c1", task.id, record("dead"), blob, only_if_owner_dead=True)) == 2
    assert snapshot(client, prefix) == before


# ---- promote --------------------------------------------------------------------------------------------------


def test_promote_moves_only_due_tasks_and_keeps_their_counts(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    due, due_blob, entry_id = running(gw, keys)
    assert record_all(gw, requeue(keys, entry_id, "c1", due, due_blob, attempt=3, reclaims=2, delay_ms=150)) == [
        Applied.DONE
    ]
    later, later_blob = new_task()
    submit(gw, keys, streams.Enqueue(later.id, later_blob, server_ms(client) + 60_000))

    assert gw.run(streams.promote(keys, 100)) == 0  # nothing due yet, by Redis' clock
    time.sleep(0.2)
    assert gw.run(streams.promote(keys, 100)) == 1
    ((new_id, fields),) = client.xrange(keys.stream)
    assert fields == {b"v": b"1", b"task": due_blob, b"attempt": b"3", b"reclaims": b"2"}
    assert client.hget(keys.index, due.id) == new_id
    assert client.zrange(keys.delayed, 0, -1) == [later.id.encode()]
    assert client.hget(keys.index, later.id) == b"d1:0:" + later_blob


def test_promote_keeps_a_version_2_task_s_version(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob = new_task(store_result=False)
    client.hset(keys.index, task.id, wire.delayed_record(wire.Delayed(b"2", 1, 0, blob)))
    client.zadd(keys.delayed, {task.id: server_ms(client) - 1})
    assert gw.run(streams.promote(keys, 10)) == 1
    ((_, fields),) = client.xrange(keys.stream)
    assert (fields[b"v"], fields[b"task"]) == (b"2", blob)


def test_promote_respects_its_limit(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    past = server_ms(client) - 1000
    for i in range(3):
        task, blob = new_task(i)
        client.hset(keys.index, task.id, wire.delayed_record(wire.Delayed(b"1", 1, 0, blob)))
        client.zadd(keys.delayed, {task.id: past + i})
    assert gw.run(streams.promote(keys, 2)) == 2
    assert client.zcard(keys.delayed) == 1
    assert gw.run(streams.promote(keys, 2)) == 1
    assert [codec.decode_entry("echo", "x", f, LIMIT).task.payload for _, f in client.xrange(keys.stream)] == [0, 1, 2]


def test_promote_drops_a_due_id_without_a_delayed_record(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    client.zadd(keys.delayed, {"gone": 1})
    assert gw.run(streams.promote(keys, 100)) == 0
    assert client.zcard(keys.delayed) == 0
    assert not client.exists(keys.stream)


# ---- throughput ring (tput.lua): settle, retry and bury count what they changed -------------------------------


def counts(client: redis.Redis, keys: CapabilityKeys) -> tuple[int, int]:
    t = throughput.window(client.hgetall(keys.throughput), time.time())
    return t.completed, t.failed


def test_a_settle_batch_counts_every_settled_task_once(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    batch = []
    for i in range(3):
        task, _, entry_id = running(gw, keys)
        batch.append(settle(keys, entry_id, "c1", task.id, record(value=i)))
    assert record_all(gw, *batch) == [Applied.DONE] * 3
    assert counts(client, keys) == (3, 0)
    assert 0 < client.pttl(keys.throughput) <= 90_000


def test_a_refused_settle_counts_nothing(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, _, entry_id = running(gw, keys)
    assert raw(gw, settle(keys, entry_id, "c2", task.id, record())) == 0
    assert not client.exists(keys.throughput)


def test_a_failed_attempt_counts_as_failed_and_a_hand_back_not(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, blob, entry_id = running(gw, keys)
    assert raw(gw, requeue(keys, entry_id, "c1", task, blob, failed_attempt=False)) == 1
    assert counts(client, keys) == (0, 0)
    entry_id, _ = read_one(gw, keys, "c1")
    assert raw(gw, requeue(keys, entry_id, "c1", task, blob)) == 1
    assert counts(client, keys) == (0, 1)


def test_a_dead_letter_counts_as_failed(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob, entry_id = running(gw, keys)
    assert raw(gw, bury(keys, entry_id, "c1", task.id, None, blob)) == 1
    assert counts(client, keys) == (0, 1)


def test_a_slot_holding_an_old_bucket_is_reset_before_counting(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    now_bucket = int(time.time() // throughput.BUCKET_S)
    # Two of the 16 slots hold buckets 16 and 32 back (80 s, 160 s ago): the slot is reused, not added to.
    for old in (now_bucket - 16, now_bucket - 32):
        slot = old % throughput.RING
        client.hset(keys.throughput, mapping={f"b{slot}": old, f"c{slot}": 500, f"f{slot}": 7})
    assert counts(client, keys) == (0, 0), "buckets outside the window are ignored"
    task, _, entry_id = running(gw, keys)
    assert raw(gw, settle(keys, entry_id, "c1", task.id, record())) == 1
    fields: dict[Any, Any] = client.hgetall(keys.throughput)
    assert len(fields) <= 3 * throughput.RING
    assert counts(client, keys) == (1, 0)


def test_window_sums_the_last_minute_and_rates_over_the_time_it_covers() -> None:
    now = 1_000_000.0  # the start of bucket 200000
    ring = {}
    for back, (c, f) in {0: (10, 1), 1: (20, 0), 11: (30, 2), 12: (999, 9)}.items():
        bucket = int(now // 5) - back
        ring.update({f"b{bucket % 16}": str(bucket), f"c{bucket % 16}": str(c), f"f{bucket % 16}": str(f)})
    t = throughput.window(ring, now + 2.0)
    assert (t.completed, t.failed) == (60, 3), "the 12th bucket back is outside the window"
    assert t.window_s == pytest.approx(57.0)  # from the start of bucket now-11 to now
    assert t.completed_per_s == pytest.approx(60 / 57.0)
    assert throughput.window({}, now).completed_per_s == 0.0
