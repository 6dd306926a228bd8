"""settle.lua and retry.lua, one test per return code, on fakeredis and Redis. Transitions are built as the typed
values the worker and the reaper use (``dispatcher.store.transitions``); ``raw`` shows a script's own reply."""

from __future__ import annotations

import redis
from helpers import keyspace
from script_kit import (
    LIMIT,
    TTL_MS,
    pending_ids,
    queued,
    raw,
    record,
    record_all,
    requeue,
    running,
    server_ms,
    settle,
    snapshot,
    text,
)

from dispatcher.store import codec, streams, transitions
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys
from dispatcher.store.wire import Applied

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
