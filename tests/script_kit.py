"""What the Lua transition tests share: building tasks and submitting them, reading one as a worker would, the
typed transitions and a script's raw reply, and a snapshot of a prefix's keys."""

from __future__ import annotations

from typing import Any

import redis
from helpers import keyspace

from dispatcher import Task
from dispatcher.store import codec, streams, transitions
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, CapabilityKeys
from dispatcher.store.transitions import Bury, Requeue, Settle, Transition
from dispatcher.store.wire import Applied, Enqueued

LIMIT = 64 * 1024
TTL_MS = 60_000


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def tasks_on_stream(client: redis.Redis, keys: CapabilityKeys) -> list[Task]:
    """The tasks of the stream's entries, in order, decoded as a worker would."""
    return [codec.decode_entry(keys.capability, "0-0", fields, LIMIT).task for _, fields in client.xrange(keys.stream)]


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


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def letter(task_id: str, blob: bytes) -> tuple[tuple[str, bytes | str | int], ...]:
    return (("task_id", task_id), ("reason", "max_retries"), ("task", blob), ("attempt", 4))


def bury(
    keys: CapabilityKeys, entry_id: str, owner: str, task_id: str, rec: bytes | None, blob: bytes, **kw: Any
) -> Bury:
    return Bury(keys, entry_id, owner, task_id, rec, TTL_MS, 100, letter(task_id, blob), **kw)
