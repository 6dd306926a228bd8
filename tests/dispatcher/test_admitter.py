"""The admitter's pace on a real redis-server: quick again (``BUSY_S``) after a tick that moved an eighth of the
window or more, doubling up to ``INTERVAL_S`` after ticks that moved less, and the 10 ms pace while it does not
hold the lease."""

from __future__ import annotations

import redis
from conftest import RedisServer

from dispatcher import Task
from dispatcher.fleet import admitter
from dispatcher.fleet.admitter import Admitter
from dispatcher.store import codec, streams
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace

WINDOW = 8
LIMIT = 64 * 1024


def queue(gw: Gateway, prefix: str, keys: CapabilityKeys, n: int) -> None:
    items = []
    for i in range(n):
        task = Task(capability=keys.capability, payload=i, priority=1)
        blob = codec.encode_task(task, LIMIT)
        items.append(streams.Enqueue(task.id, blob, version=codec.version_of(task), priority=1))
    gw.run(streams.submit([(keys, items)], 60_000, WINDOW))
    gw.run(streams.register_capabilities(KeySpace(prefix).capabilities, [keys.capability]))


def read_all(client: redis.Redis, keys: CapabilityKeys) -> int:
    """As workers that read and settle at once: the window is free again."""
    n = client.xlen(keys.stream)
    client.delete(keys.stream)
    return int(n)


def test_the_pace_follows_what_the_ticks_moved(redis_server: RedisServer, prefix: str) -> None:
    client = redis_server.client()
    gw = Gateway(client, redis_server.url)
    keys = KeySpace(prefix).capability("paced")
    queue(gw, prefix, keys, 40)  # 8 go onto the stream at submit, 32 wait in the ready set
    first = Admitter(gw, KeySpace(prefix), "one", WINDOW)
    other = Admitter(gw, KeySpace(prefix), "two", WINDOW)
    assert first.tick() == 0  # the window is full: nothing moves
    assert first.pause_s() == admitter.INTERVAL_S
    assert other.tick() == 0 and other.pause_s() == admitter.INTERVAL_S  # not the lease holder
    assert read_all(client, keys) == 8
    assert first.tick() == WINDOW  # the freed window, refilled in one tick
    assert first.pause_s() == admitter.BUSY_S
    pauses = []
    for _ in range(6):
        assert first.tick() == 0
        pauses.append(first.pause_s())
    assert pauses == [0.002, 0.004, 0.008, admitter.INTERVAL_S, admitter.INTERVAL_S, admitter.INTERVAL_S]
    client.delete(keys.stream)
    client.close()
