"""submit.lua, one test per outcome, on fakeredis and Redis: entries, delayed records, format versions, and
the dedupe by task id, idempotency key and kept result."""

from __future__ import annotations

import redis
from script_kit import (
    LIMIT,
    TTL_MS,
    new_task,
    queued,
    raw,
    record,
    running,
    server_ms,
    settle,
    snapshot,
    submit,
    text,
)

from dispatcher.store import codec, streams, wire
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys
from dispatcher.store.wire import Enqueued

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
