"""The flow-control transitions on fakeredis and Redis: submit's paths for a task with a priority (straight onto the
stream, or into the ready set) and ``admit`` (best rank first, within the window; each return value)."""

from __future__ import annotations

from typing import Any

import redis
from helpers import keyspace
from script_kit import tasks_on_stream

from dispatcher import Task
from dispatcher.store import codec, flow, streams, wire
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys
from dispatcher.store.wire import Enqueued

LIMIT = 64 * 1024
WINDOW = 3


def item(priority: int | None = None, **options: Any) -> streams.Enqueue:
    task = Task(capability="echo", payload=priority, priority=priority, **options)
    blob = codec.encode_task(task, LIMIT)
    return streams.Enqueue(
        task.id, blob, 0, task.idempotency_key, codec.version_of(task), task.store_result, task.priority
    )


def submit(gw: Gateway, keys: CapabilityKeys, *items: streams.Enqueue) -> list[Enqueued]:
    return gw.run(streams.submit([(keys, list(items))], 60_000, WINDOW))


def payloads_on_stream(client: redis.Redis, keys: CapabilityKeys) -> list[Any]:
    return [t.payload for t in tasks_on_stream(client, keys)]


def test_a_task_with_a_priority_goes_straight_onto_a_stream_under_its_window(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    first = item(5)
    assert submit(gw, keys, first) == [Enqueued(first.task_id, added=True)]
    assert client.xlen(keys.stream) == 1
    assert client.zcard(keys.ready) == 0
    assert wire.place(client.hget(keys.index, first.task_id)) == client.xrange(keys.stream)[0][0].decode()


def test_tasks_with_a_priority_beyond_the_window_wait_in_the_ready_set(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    items = [item(p) for p in (0, 0, 0, 0, 9, 3)]
    assert [e.added for e in submit(gw, keys, *items)] == [True] * 6
    assert payloads_on_stream(client, keys) == [0, 0, 0]  # the window: 3 undelivered entries
    assert client.zcard(keys.ready) == 3
    # A waiting task's index value is a waiting record (the delayed layout), so status() says queued.
    assert isinstance(wire.place(client.hget(keys.index, items[4].task_id)), wire.Delayed)
    # Once the window is full, a new task with a priority waits even though it would fit after a read.
    assert client.zscore(keys.ready, items[3].task_id) is not None


def test_rank_is_a_time_offset_of_60_s_per_level(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    fill = [item(0) for _ in range(WINDOW)]
    low, high = item(0), item(9)
    submit(gw, keys, *fill, low, high)
    low_score, high_score = client.zscore(keys.ready, low.task_id), client.zscore(keys.ready, high.task_id)
    assert low_score is not None and high_score is not None
    assert low_score - high_score == 9 * 60_000 * 1024 - 1  # one call: the same ms; the low one came first


def test_tasks_of_one_priority_keep_their_order_in_a_call(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    waiting = [item(2) for _ in range(50)]
    submit(gw, keys, *[item(0) for _ in range(WINDOW)], *waiting)
    assert [m.decode() for m in client.zrange(keys.ready, 0, -1)] == [w.task_id for w in waiting]


def test_a_task_without_a_priority_takes_the_plain_path_even_when_others_wait(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    submit(gw, keys, *[item(1) for _ in range(WINDOW + 2)])
    plain = item(None)
    submit(gw, keys, plain)
    assert client.xlen(keys.stream) == WINDOW + 1
    assert client.zscore(keys.ready, plain.task_id) is None


def test_admit_returns_0_when_nothing_waits(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    assert gw.run(flow.admit([keys], WINDOW)) == (0, 0)
    assert keyspace(client, keys.stream.split(":")[0]) == set()


def test_admit_returns_0_while_the_window_is_full(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    submit(gw, keys, *[item(1) for _ in range(WINDOW + 2)])
    assert gw.run(flow.admit([keys], WINDOW)) == (0, 2)
    assert client.zcard(keys.ready) == 2


def test_admit_moves_the_best_ranked_first_up_to_the_room_read_entries_leave(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    submit(gw, keys, *[item(0) for _ in range(WINDOW)], item(0), item(2), item(9), item(5))
    gw.run(streams.ensure_groups([keys.stream]))
    gw.run(streams.read([keys.stream], "c1", 2, None))  # two read: two pending, one undelivered
    assert gw.run(flow.admit([keys], WINDOW)) == (2, 2)
    assert payloads_on_stream(client, keys)[WINDOW:] == [9, 5]
    assert client.zcard(keys.ready) == 2
    moved = client.xrange(keys.stream)[-1]
    task_id = codec.decode_entry("echo", "0-0", moved[1], LIMIT).task.id
    assert client.hget(keys.index, task_id) == moved[0]  # its index field now names its entry


def test_admit_drops_an_id_without_a_waiting_record_and_does_not_count_it(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    client.zadd(keys.ready, {"ghost": 1})
    assert gw.run(flow.admit([keys], WINDOW)) == (0, 0)
    assert client.exists(keys.ready) == 0


def test_waiting_counts_the_ready_set(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    submit(gw, keys, *[item(1) for _ in range(WINDOW + 4)])
    assert gw.run(flow.waiting([keys])) == [4]


def test_idempotency_holds_for_a_waiting_task(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    submit(gw, keys, *[item(1) for _ in range(WINDOW)])
    first = item(4, idempotency_key="order-1")
    again = item(4, idempotency_key="order-1")
    assert submit(gw, keys, first) == [Enqueued(first.task_id, added=True)]
    assert submit(gw, keys, again, first) == [Enqueued(first.task_id, added=False)] * 2
    assert client.zcard(keys.ready) == 1
