"""The fleet scripts (lease, forget, requeue, drop), one test per return code, on fakeredis and on Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from helpers import read_as

from dispatcher import Task
from dispatcher.store import codec, letters, liveness, retire, scripts, streams
from dispatcher.store import pending as ops
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, CapabilityKeys
from dispatcher.store.wire import Dropped, Requeued


def run(gw: Gateway, name: str, script_keys: list[str], args: list[Any]) -> Any:
    return gw.send([scripts.call(name, script_keys, args)])[0]


# ---- lease ---------------------------------------------------------------------------------------------


def test_lease_taken_when_free_renewed_by_owner_refused_to_others(
    gw: Gateway, client: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}:lease"
    assert run(gw, "lease", [key], ["a", 10_000]) == 1
    assert client.get(key) == b"a"
    client.pexpire(key, 50)
    assert run(gw, "lease", [key], ["a", 10_000]) == 1  # renewed by its owner
    assert client.pttl(key) > 5_000
    assert run(gw, "lease", [key], ["b", 10_000]) == 0
    assert client.get(key) == b"a"


def test_lease_released_only_by_its_owner(gw: Gateway, client: redis.Redis, prefix: str) -> None:
    key = f"{prefix}:lease"
    assert gw.run(liveness.lease(key, "a", 10_000))
    assert run(gw, "lease", [key], ["b", 0]) == 0
    assert client.get(key) == b"a"
    assert run(gw, "lease", [key], ["a", 0]) == 1
    assert client.exists(key) == 0
    assert gw.run(liveness.lease(key, "b", 10_000))  # free again at once


# ---- forget --------------------------------------------------------------------------------------------


def _consumer_with_pending(gw: Gateway, keys: CapabilityKeys, name: str) -> str:
    task = Task(capability="echo", payload=1)
    gw.run(streams.submit([(keys, [streams.Enqueue(task.id, codec.encode_task(task, 1 << 16))])], 1000))
    gw.run(streams.ensure_groups([keys.stream]))
    ((_, entries),) = gw.run(streams.read([keys.stream], name, 10, None))
    return str(entries[0][0])


def _consumers(client: redis.Redis, keys: CapabilityKeys) -> set[str]:
    return {
        c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
        for c in client.xinfo_consumers(keys.stream, GROUP)
    }


def test_forget_keeps_a_consumer_whose_heartbeat_exists(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    gw.run(streams.ensure_groups([keys.stream]))
    client.xgroup_createconsumer(keys.stream, GROUP, "alive")
    client.set(keys.heartbeat("alive"), "alive", px=10_000)
    assert run(gw, "forget", [keys.stream, keys.heartbeat("alive")], [GROUP, "alive"]) == 0
    assert "alive" in _consumers(client, keys)


def test_forget_keeps_a_dead_consumer_with_pending_entries(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    _consumer_with_pending(gw, keys, "dead")
    assert run(gw, "forget", [keys.stream, keys.heartbeat("dead")], [GROUP, "dead"]) == 0
    assert client.xpending(keys.stream, GROUP)["pending"] == 1  # its entry is still claimable


def test_forget_deletes_a_dead_consumer_with_nothing_pending(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    gw.run(streams.ensure_groups([keys.stream]))
    client.xgroup_createconsumer(keys.stream, GROUP, "gone")
    assert gw.run(ops.forget(keys, "gone")) is True
    assert "gone" not in _consumers(client, keys)


# ---- requeue -------------------------------------------------------------------------------------------


def _letter(client: redis.Redis, keys: CapabilityKeys, task_id: str, blob: bytes) -> str:
    letter_id = client.xadd(keys.dead, {"v": "1", "task_id": task_id, "task": blob, "reason": "max_retries"})
    return letter_id.decode()


def test_requeue_adds_a_fresh_entry_and_removes_the_letter(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task = Task(capability="echo", payload="again")
    blob = codec.encode_task(task, 1 << 16)
    letter_id = _letter(client, keys, task.id, blob)
    client.set(keys.result(task.id), b"old dead result")
    assert gw.run(letters.requeue(keys, [(letter_id, task.id, "")])) == [Requeued.REQUEUED]
    ((found_id, fields),) = client.xrange(keys.stream)
    assert fields == {b"v": b"1", b"task": blob, b"attempt": b"1", b"reclaims": b"0"}
    assert client.hget(keys.index, task.id) == found_id
    assert client.exists(keys.result(task.id)) == 0
    assert client.xlen(keys.dead) == 0  # an emptied stream key stays, with no entries


def test_requeue_of_a_letter_already_gone_returns_0(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    assert gw.run(letters.requeue(keys, [("1-1", "some-task", "")])) == [Requeued.GONE]
    assert client.exists(keys.stream) == 0


def test_requeue_of_a_letter_without_a_task_returns_minus_1(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    letter_id = _letter(client, keys, "", b"")  # a decode_error letter: nothing to run
    assert gw.run(letters.requeue(keys, [(letter_id, "", "")])) == [Requeued.NO_TASK]
    other = _letter(client, keys, "real-id", b"\x80")
    assert gw.run(letters.requeue(keys, [(other, "another-id", "")])) == [Requeued.NO_TASK]  # holds another task
    assert client.xlen(keys.dead) == 2 and client.exists(keys.stream) == 0


def test_requeue_keeps_the_format_version_the_letter_records(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task = Task(capability="echo", payload="again", store_result=False)
    blob = codec.encode_task(task, 1 << 16)
    letter_id = client.xadd(keys.dead, {"v": "2", "task_id": task.id, "task": blob, "reason": "max_retries"})
    assert gw.run(letters.requeue(keys, [(letter_id.decode(), task.id, "")])) == [Requeued.REQUEUED]
    ((_, fields),) = client.xrange(keys.stream)
    assert fields[b"v"] == b"2"


# ---- drop ----------------------------------------------------------------------------------------------


def test_drop_deletes_the_keys_of_a_capability_without_tasks(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    assert gw.run(retire.drop(keys, purge_dead=False)) is Dropped.DROPPED
    assert client.exists(keys.stream, keys.index, keys.delayed, keys.dead) == 0
    assert run(gw, "drop", [keys.stream, keys.index, keys.delayed, keys.dead], [GROUP, 0]) == 1  # nothing there


@pytest.mark.parametrize("where", ["waiting", "running", "running_deleted", "delayed"])
def test_drop_keeps_a_capability_with_tasks(where: str, gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task = Task(capability="echo", payload=1)
    item = streams.Enqueue(task.id, codec.encode_task(task, 1 << 20), 60_000 if where == "delayed" else 0)
    gw.run(streams.submit([(keys, [item])], 1000))
    if where.startswith("running"):
        entry_id = read_as(client, keys.stream)
        if where == "running_deleted":  # pending, its entry gone: still running
            client.xdel(keys.stream, entry_id)
            client.hdel(keys.index, task.id)
    before = sorted(k.decode() for k in client.keys(f"{keys.stream.rsplit(':', 1)[0]}:*"))
    assert run(gw, "drop", [keys.stream, keys.index, keys.delayed, keys.dead], [GROUP, 1]) == 0
    assert gw.run(retire.drop(keys, purge_dead=True)) is Dropped.BUSY
    assert sorted(k.decode() for k in client.keys(f"{keys.stream.rsplit(':', 1)[0]}:*")) == before


def test_drop_keeps_dead_letters_unless_told(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    client.xadd(keys.dead, {"reason": "rejected"})
    assert run(gw, "drop", [keys.stream, keys.index, keys.delayed, keys.dead], [GROUP, 0]) == -1
    assert gw.run(retire.drop(keys, purge_dead=False)) is Dropped.DEAD_LETTERS
    assert client.xlen(keys.dead) == 1
    assert gw.run(retire.drop(keys, purge_dead=True)) is Dropped.DROPPED
    assert client.exists(keys.dead) == 0
