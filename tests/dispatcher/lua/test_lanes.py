"""Lanes on fakeredis and Redis: a flow-controlled task that comes back from a delay, a retry's backoff or the dead
letters waits in the set submit puts it in (``promote.lua``, ``retry.lua``, ``requeue.lua``, ``submit.lua``'s
delayed branch), and a permit counts only while its holder is on the stream or running (``flow.holders``)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from helpers import keyspace

from dispatcher import Task
from dispatcher.fleet.deadletters import decode_letter
from dispatcher.fleet.limiter import LimitGate
from dispatcher.store import codec, flow, letters, limits, streams, transitions, wire
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, CapabilityKeys, KeySpace
from dispatcher.store.transitions import Requeue
from dispatcher.store.wire import Applied, Enqueued, Requeued

LIMIT = 64 * 1024
WINDOW = 3


def enqueue(task: Task, delay_ms: int = 0) -> streams.Enqueue:
    blob = codec.encode_task(task, LIMIT)
    return streams.Enqueue(
        task.id,
        blob,
        delay_ms,
        version=codec.version_of(task),
        store_result=task.store_result,
        priority=task.priority,
        limited=task.rate_limits is not None,
        keyed=task.rate_limits is None and task.concurrency_key is not None,
    )


def submit(gw: Gateway, keys: CapabilityKeys, *items: streams.Enqueue) -> list[Enqueued]:
    return gw.run(streams.submit([(keys, list(items))], 60_000, WINDOW))


def make_due(client: redis.Redis, keys: CapabilityKeys) -> None:
    """Every delayed task due now (their due times moved into the past by Redis' clock)."""
    for member in client.zrange(keys.delayed, 0, -1):
        client.zadd(keys.delayed, {member: 1})


def promote(gw: Gateway, keys: CapabilityKeys) -> int:
    return gw.run(streams.promote(keys, 100, WINDOW))


def task(**options: Any) -> Task:
    return Task(capability="echo", payload=options.pop("payload", 1), **options)


# ---- submit's delayed branch writes the lane; promote puts the task into its set when due -----------------------


@pytest.mark.parametrize(
    ("options", "lane", "waits_in"),
    [
        ({"rate_limits": {"api": 1}}, b"w0", "limited"),
        ({"rate_limits": {"api": 1}, "concurrency_key": "repo-1", "priority": 7}, b"w7", "limited"),
        ({"concurrency_key": "repo-1", "priority": 2}, b"k2", "keyed"),
    ],
)
def test_a_delayed_flow_controlled_task_waits_in_its_set_when_due(
    options: dict[str, Any], lane: bytes, waits_in: str, gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    t = task(**options)
    assert submit(gw, keys, enqueue(t, delay_ms=60_000)) == [Enqueued(t.id, added=True, delayed=True)]
    place = wire.place(client.hget(keys.index, t.id))
    assert isinstance(place, wire.Delayed) and place.lane == lane
    assert promote(gw, keys) == 0  # not due yet
    make_due(client, keys)
    assert promote(gw, keys) == 1
    assert client.xlen(keys.stream) == 0  # not onto the stream: it waits for its gates again
    assert client.zcard(keys.delayed) == 0
    assert [m.decode() for m in client.zrange(getattr(keys, waits_in), 0, -1)] == [t.id]
    waiting = wire.place(client.hget(keys.index, t.id))
    assert isinstance(waiting, wire.Delayed) and (waiting.attempt, waiting.blob) == (1, place.blob)


def test_a_promoted_task_is_ranked_as_submit_ranks_it(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    low, high = task(rate_limits={"api": 1}, priority=0), task(rate_limits={"api": 1}, priority=9)
    submit(gw, keys, enqueue(low, 60_000), enqueue(high, 60_000))
    make_due(client, keys)
    assert promote(gw, keys) == 2
    low_score, high_score = client.zscore(keys.limited, low.id), client.zscore(keys.limited, high.id)
    assert low_score is not None and high_score is not None
    assert low_score - high_score == pytest.approx(9 * 60_000 * 1024, abs=1024)
    assert [m.decode() for m in client.zrange(keys.limited, 0, -1)] == [high.id, low.id]


def test_a_delayed_task_with_a_priority_goes_onto_the_stream_under_the_window_else_waits_ranked(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    first = task(priority=4, payload="first")
    submit(gw, keys, enqueue(first, 60_000))
    assert wire.place(client.hget(keys.index, first.id)).lane == b"r4"  # type: ignore[union-attr]
    make_due(client, keys)
    assert promote(gw, keys) == 1
    assert client.hget(keys.index, first.id) == client.xrange(keys.stream)[0][0]  # the fast path, as submit's
    submit(gw, keys, *[enqueue(task(priority=0)) for _ in range(WINDOW)])  # the window fills, one waits
    later = task(priority=6, payload="later")
    submit(gw, keys, enqueue(later, 60_000))
    make_due(client, keys)
    assert promote(gw, keys) == 1
    assert client.zscore(keys.ready, later.id) is not None
    assert isinstance(wire.place(client.hget(keys.index, later.id)), wire.Delayed)


def test_a_plain_delayed_task_has_no_lane_and_goes_onto_the_stream(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    t = task()
    submit(gw, keys, enqueue(t, 60_000))
    assert client.hget(keys.index, t.id) == b"d1:0:" + codec.encode_task(t, LIMIT)
    make_due(client, keys)
    assert promote(gw, keys) == 1
    assert client.hget(keys.index, t.id) == client.xrange(keys.stream)[0][0]
    assert not client.exists(keys.ready, keys.limited, keys.keyed)


def test_a_record_with_a_lane_of_no_known_set_goes_onto_the_stream(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    blob = codec.encode_task(task(), LIMIT)
    client.hset(keys.index, "odd", wire.delayed_record(wire.Delayed(b"3", 2, 1, blob, b"z1")))
    client.zadd(keys.delayed, {"odd": 1})
    assert promote(gw, keys) == 1  # never left nowhere
    ((_, fields),) = client.xrange(keys.stream)
    assert (fields[b"attempt"], fields[b"reclaims"], fields[b"task"]) == (b"2", b"1", blob)


# ---- retry.lua: a retry with a lane goes through the delayed set, then its waiting set ---------------------------


def running(gw: Gateway, keys: CapabilityKeys, t: Task) -> tuple[bytes, str]:
    """``t`` on the stream and read by consumer c1 (as the admitter would have put it there)."""
    blob = codec.encode_task(t, LIMIT)
    submit(gw, keys, streams.Enqueue(t.id, blob, version=codec.version_of(t), store_result=t.store_result))
    gw.run(streams.ensure_groups([keys.stream]))
    ((_, entries),) = gw.run(streams.read([keys.stream], "c1", 1, None))
    return blob, entries[0][0]


def retry(keys: CapabilityKeys, t: Task, blob: bytes, entry_id: str, delay_ms: int, lane: str) -> Requeue:
    return Requeue(
        keys, entry_id, "c1", t.id, blob, codec.version_of(t), attempt=2, reclaims=0, delay_ms=delay_ms, lane=lane
    )


@pytest.mark.parametrize("delay_ms", [0, 60_000])
def test_a_retry_with_a_lane_waits_in_the_delayed_set_then_in_its_set(
    delay_ms: int, gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    t = task(rate_limits={"api": 1})
    blob, entry_id = running(gw, keys, t)
    assert gw.run(transitions.record([retry(keys, t, blob, entry_id, delay_ms, "w0")])) == [Applied.DONE]
    assert client.xlen(keys.stream) == 0  # the old entry acked and deleted, no new one
    assert client.hget(keys.index, t.id) == wire.delayed_record(wire.Delayed(b"3", 2, 0, blob, b"w0"))
    assert client.zscore(keys.delayed, t.id) is not None
    make_due(client, keys)
    assert promote(gw, keys) == 1
    assert [m.decode() for m in client.zrange(keys.limited, 0, -1)] == [t.id]
    place = wire.place(client.hget(keys.index, t.id))
    assert isinstance(place, wire.Delayed) and place.attempt == 2  # the attempt travels through the wait


def test_a_retry_without_a_lane_is_unchanged(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    t = task(rate_limits={"api": 1})
    blob, entry_id = running(gw, keys, t)
    assert gw.run(transitions.record([retry(keys, t, blob, entry_id, 0, "")])) == [Applied.DONE]  # a reclaim's way
    ((new_id, fields),) = client.xrange(keys.stream)
    assert client.hget(keys.index, t.id) == new_id and fields[b"attempt"] == b"2"
    assert client.zcard(keys.delayed) == 0


def test_a_promoted_retry_takes_its_units_again_through_the_gate(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    space = KeySpace(prefix)
    client.hset(space.limit("api").state, mapping={"rate_per_min": 60, "burst": 1})  # 1 unit, then 1 per second
    t = task(rate_limits={"api": 1})
    blob, entry_id = running(gw, keys, t)
    gw.run(transitions.record([retry(keys, t, blob, entry_id, 0, "w0")]))
    make_due(client, keys)
    promote(gw, keys)
    gate = LimitGate(gw, space, WINDOW, LIMIT)
    assert gate.admit([keys]) == (1, 0)  # the one unit taken
    assert client.hget(keys.index, t.id) == client.xrange(keys.stream)[0][0]
    assert gw.run(limits.take(space.limit("api"), 1)) == (limits.Taken.NOT_NOW, pytest.approx(1000, abs=50))


# ---- requeue.lua: a dead letter of a flow-controlled task waits in its set ---------------------------------------


def letter(client: redis.Redis, keys: CapabilityKeys, t: Task) -> str:
    fields = {"v": "3", "task_id": t.id, "task": codec.encode_task(t, LIMIT), "reason": "max_retries"}
    return client.xadd(keys.dead, fields).decode()  # type: ignore[no-any-return]


def test_requeue_with_a_lane_puts_the_task_into_its_set(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    t = task(concurrency_key="repo-1", priority=3)
    letter_id = letter(client, keys, t)
    assert gw.run(letters.requeue(keys, [(letter_id, t.id, "k3")], WINDOW)) == [Requeued.REQUEUED]
    assert client.xlen(keys.stream) == 0 and client.xlen(keys.dead) == 0
    assert [m.decode() for m in client.zrange(keys.keyed, 0, -1)] == [t.id]
    place = wire.place(client.hget(keys.index, t.id))
    assert place == wire.Delayed(b"3", 1, 0, codec.encode_task(t, LIMIT))  # a waiting record, a fresh attempt


def test_requeue_of_a_task_with_a_priority_alone_takes_the_fast_path_under_the_window(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    t = task(priority=5)
    assert gw.run(letters.requeue(keys, [(letter(client, keys, t), t.id, "r5")], WINDOW)) == [Requeued.REQUEUED]
    ((entry_id, fields),) = client.xrange(keys.stream)
    assert client.hget(keys.index, t.id) == entry_id and fields[b"attempt"] == b"1"
    assert not client.exists(keys.ready)


def test_the_lane_of_a_letter_follows_its_task_s_options() -> None:
    def lane(t: Task) -> str:
        return decode_letter("1-0", {b"task": codec.encode_task(t, LIMIT)}, LIMIT).lane

    assert lane(task(rate_limits={"api": 2}, concurrency_key="k")) == "w0"
    assert lane(task(concurrency_key="k", priority=8)) == "k8"
    assert lane(task(priority=1)) == "r1"
    assert lane(task(fairness_key="tenant-1")) == "f0"
    assert lane(task(fairness_key="t", priority=7, rate_limits={"a": 1})) == "f7"
    assert lane(task()) == ""
    assert decode_letter("1-0", {b"task": b"\xc1"}, LIMIT).lane == ""


# ---- flow.holders: a permit counts while its holder is on the stream or running --------------------------------


def test_a_holder_in_backoff_or_waiting_holds_no_permit(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    blob = codec.encode_task(task(concurrency_key="repo-1"), LIMIT)
    client.hset(keys.index, "on-stream", "1700000000000-0")
    client.hset(keys.index, "in-backoff", wire.delayed_record(wire.Delayed(b"3", 2, 0, blob, b"k0")))
    client.hset(keys.index, "waiting", wire.delayed_record(wire.Delayed(b"3", 1, 0, blob)))
    client.zadd(keys.permits("repo-1"), {"on-stream": 0, "in-backoff": 0, "waiting": 0, "settled": 0})
    assert gw.run(flow.holders(keys, ["repo-1"])) == {"repo-1": 1}
    assert client.zrange(keys.permits("repo-1"), 0, -1) == [b"on-stream"]


def test_nothing_of_a_lane_is_left_once_the_task_settled(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys, prefix: str
) -> None:
    t = task(concurrency_key="repo-1")
    submit(gw, keys, enqueue(t, 60_000))
    client.hset(keys.caps, "per_key", 1)
    make_due(client, keys)
    promote(gw, keys)
    assert LimitGate(gw, KeySpace(prefix), WINDOW, LIMIT).admit([keys]) == (1, 0)
    gw.run(streams.ensure_groups([keys.stream]))
    ((_, entries),) = gw.run(streams.read([keys.stream], "c1", 1, None))
    settle = transitions.Settle(keys, entries[0][0], "c1", t.id, None, 60_000)
    assert gw.run(transitions.record([settle])) == [Applied.DONE]
    assert gw.run(flow.holders(keys, ["repo-1"])) == {"repo-1": 0}
    left = keyspace(client, prefix)
    # The stream keeps its group, the throughput ring its count (it expires); no set, record or permit is left.
    assert left == {keys.stream, keys.caps, keys.throughput}, left
    assert client.xinfo_groups(keys.stream)[0]["name"] == GROUP.encode()
