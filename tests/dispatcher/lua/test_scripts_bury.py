"""bury.lua and promote.lua, one test per return code, on fakeredis and Redis: dead letters and dead results,
untrusted ids, and due delayed tasks moved onto the stream."""

from __future__ import annotations

import time

import redis
from helpers import keyspace
from script_kit import (
    LIMIT,
    TTL_MS,
    bury,
    new_task,
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
    submit,
)

from dispatcher.store import codec, streams, wire
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys
from dispatcher.store.transitions import Bury
from dispatcher.store.wire import Applied

# ---- bury -----------------------------------------------------------------------------------------------------


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
