"""Every script call keeps to one Redis Cluster slot, and the loader's includes expand as they should."""

from __future__ import annotations

import binascii
from collections.abc import Generator
from typing import Any

import pytest

from dispatcher import Task
from dispatcher.fleet import decide
from dispatcher.settings import Settings
from dispatcher.store import codec, fair, flow, letters, limits, liveness, retire, scripts, streams, transitions
from dispatcher.store import pending as ops
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.transitions import Release

KEYS = KeySpace("p").capability("llm.chat")
CTX = decide.Context(Settings.build(), "worker-1")


def slot(key: str) -> int:
    """Redis Cluster's hash slot of ``key``: CRC16/XMODEM of its hash tag (or whole name), modulo 16384."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key.encode(), 0) % 16384


def test_slot_matches_redis_cluster_examples() -> None:
    assert slot("123456789") == 12739  # the CRC16 check value of the Redis Cluster specification
    assert slot("{user1000}.following") == slot("{user1000}.followers") == slot("user1000")
    assert slot("foo{}{bar}") == slot("foo{}{bar}")  # an empty first tag hashes the whole name


def first_commands(op: Generator[Any, Any, Any]) -> list[tuple[Any, ...]]:
    return list(next(op))


def delivery(keys: CapabilityKeys, store_result: bool = True) -> codec.Delivery:
    task = Task(capability=keys.capability, payload=1, idempotency_key="k", store_result=store_result)
    blob = codec.encode_task(task, 1 << 20)
    return codec.Delivery("1-0", task, blob, 2, 0, codec.version_of(task))


def rejoin_commands() -> list[tuple[Any, ...]]:
    """The script call of ``fair.rejoin`` for two tasks of two tenants, after its two reads."""
    op = fair.rejoin(KEYS, 10, 1 << 20)
    next(op)
    op.send([[b"t1", b"t2"]])
    blobs = [codec.encode_task(Task(capability=KEYS.capability, fairness_key=t), 1 << 20) for t in ("a", "b")]
    return list(op.send([[b"d1:0:3:f0:" + b for b in blobs]]))


def every_script_call() -> list[tuple[Any, ...]]:
    d = delivery(KEYS)
    batch = [
        decide.succeeded(CTX, KEYS, d, 1).transition,
        decide.succeeded(CTX, KEYS, delivery(KEYS, store_result=False), 1).transition,
        decide.failed(CTX, KEYS, d, ValueError("x")).transition,
        decide.reclaim(CTX, KEYS, d, only_if_owner_dead=True).transition,
        decide.dead(CTX, KEYS, d, "poison", None, only_if_owner_dead=True).transition,
        decide.undecodable(CTX, KEYS, "2-0", {b"task": b"\xc1"}, ValueError("bad")).transition,
        Release(KEYS, "3-0"),
    ]
    commands, _ = transitions.plan(batch)
    task = Task(capability=KEYS.capability, idempotency_key="order-7")
    item = streams.Enqueue(task.id, b"\x80", 0, task.idempotency_key)
    commands += first_commands(streams.submit([(KEYS, [item])], 1000))
    commands += first_commands(streams.promote([KEYS], 10))
    commands += first_commands(flow.admit([KEYS], 10))
    commands += first_commands(flow.admit_chosen(KEYS, KEYS.keyed, [("t1", None), ("t2", "repo-17")]))
    commands += first_commands(limits.take(KeySpace("p").limit("openai-rpm"), 1))
    commands += first_commands(fair.peek(KEYS, ["tenant-42", "tenant-7"], 10, 4, {"tenant-7"}))
    commands += first_commands(fair.gates(KeySpace("p"), KEYS, [], ["repo-17", "repo-18"]))[-1:]
    chosen = [fair.Choice(0, "t1", "repo-17"), fair.Choice(1, "t2", None)]
    commands += first_commands(fair.admit_chosen(KEYS, ["tenant-42", "tenant-7"], [False, True], chosen))
    commands += first_commands(letters.requeue(KEYS, [("1-1", "t", "k0")]))
    commands += rejoin_commands()
    commands += first_commands(ops.forget(KEYS, "worker-1"))
    commands += first_commands(retire.drop(KEYS, purge_dead=True))
    commands += first_commands(liveness.lease(KeySpace("p").reaper_lease, "worker-1", 1000))
    return commands


@pytest.mark.parametrize("command", every_script_call(), ids=lambda c: f"{c[0]}-{scripts.name_by_sha(str(c[1]))}")
def test_every_key_of_a_script_call_hashes_to_one_slot(command: tuple[Any, ...]) -> None:
    keys = [str(k) for k in command[3 : 3 + int(command[2])]] if command[0] == "EVALSHA" else [command[1]]
    assert keys, command[:3]
    assert len({slot(k) for k in keys}) == 1, keys


def test_every_script_is_covered_by_the_slot_test() -> None:
    names = {scripts.name_by_sha(str(c[1])) for c in every_script_call() if c[0] == "EVALSHA"}
    assert names == set(scripts.NAMES)


def test_includes_are_expanded_and_each_helper_is_defined_once() -> None:
    for name in scripts.NAMES:
        source = scripts.script(name).source.decode()
        assert "@include" not in source, name
        for helper in ("held_by", "add_entry", "delayed_record", "read_delayed", "store_result"):
            assert source.count(f"local function {helper}(") <= 1, (name, helper)
    owner_checked = ("settle", "retry", "bury")
    for name in owner_checked:
        assert "local function held_by(" in scripts.script(name).source.decode(), name
    assert all(scripts.source_by_sha(scripts.script(n).sha) == scripts.script(n).source for n in scripts.NAMES)
