"""The worker driven in-process, in burst mode (drain what is there, settle, return), against the real Redis.

These reach the runtime's branches directly instead of through subprocesses and log greps: the slot invariant
as Redis sees it, many capabilities read in fair turn, undecodable and expired entries, and the hand-back on stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from helpers import keyspace

from dispatcher import Dispatcher, Settings, Task
from dispatcher.store import codec
from dispatcher.store.keys import GROUP, KeySpace
from workers import Registry, Worker

DEADLINE_S = 60.0


def make_worker(settings: Settings, registry: Registry, capabilities: list[str], **options: Any) -> Worker:
    """A burst worker without upkeep (no reaper or mover thread), as tests want it."""
    options.setdefault("burst", True)
    options.setdefault("upkeep", False)
    return Worker(registry, capabilities, settings, **options)


def run(worker: Worker, timeout_s: float = DEADLINE_S) -> None:
    asyncio.run(asyncio.wait_for(worker.run(), timeout_s))


def test_a_burst_worker_drains_settles_and_returns(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    registry = Registry()
    registry.register("double", lambda task: task.payload * 2)
    handles = dispatcher.submit_many([Task(capability="double", payload=i) for i in range(50)])
    run(make_worker(settings, registry, ["double"], concurrency=4))
    assert [h.result(timeout_s=5) for h in handles] == [i * 2 for i in range(50)]
    keys = KeySpace(prefix).capability("double")
    left = keyspace(client, prefix) - {keys.result(h.id) for h in handles}
    assert left == {keys.stream, keys.throughput, f"{prefix}:capabilities"}, left
    assert 0 < client.pttl(keys.throughput) <= 90_000  # the throughput ring expires when nothing settles
    assert client.xlen(keys.stream) == 0


def test_the_consumer_s_pending_entries_never_exceed_its_concurrency(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("probe")
    seen: list[int] = []
    worker: Worker | None = None

    async def probe(task: Task) -> None:
        assert worker is not None
        # What Redis says this consumer holds, sampled while handlers run and settles are in flight.
        seen.append(len(client.xpending_range(keys.stream, GROUP, "-", "+", 1000, consumername=worker.name)))
        await asyncio.sleep(0.001 * (task.payload % 5))

    registry = Registry()
    registry.register("probe", probe)
    dispatcher.submit_many([Task(capability="probe", payload=i) for i in range(300)])
    worker = make_worker(settings, registry, ["probe"], concurrency=7)
    run(worker)
    assert len(seen) == 300
    assert max(seen) <= 7, max(seen)
    assert max(seen) >= 2, "the probe saw no concurrency at all: it tests nothing"


def test_every_one_of_200_capabilities_is_read_within_a_round(settings: Settings, dispatcher: Dispatcher) -> None:
    caps = [f"c{i:03}" for i in range(200)]
    registry = Registry()
    started: dict[str, float] = {}

    def mark(task: Task) -> None:
        started[task.capability] = time.monotonic()

    for cap in caps:
        registry.register(cap, mark)
    wanted = ["c003", "c050", "c100", "c150", "c199"]
    handles = dispatcher.submit_many([Task(capability=cap, payload=None) for cap in wanted])
    began = time.monotonic()
    run(make_worker(settings, registry, caps, concurrency=10))
    assert sorted(started) == wanted
    for handle in handles:
        assert handle.status() == "succeeded"
    print(f"\nlast of 5 tasks over 200 capabilities started after {max(started.values()) - began:.3f} s")


def test_undecodable_and_expired_entries_become_dead_letters_without_harm(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("echo")
    registry = Registry()
    registry.register("echo", lambda task: task.payload)
    client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    client.xadd(keys.stream, {"v": "1", "task": b"\xc1 not msgpack"})
    expired = dispatcher.submit("echo", "late", expires_at=time.time() - 1)
    fine = dispatcher.submit("echo", "ok")
    run(make_worker(settings, registry, ["echo"], concurrency=2))
    assert fine.result(timeout_s=5) == "ok"
    reasons = sorted(fields[b"reason"] for _, fields in client.xrange(keys.dead))
    assert reasons == [b"decode_error", b"expired"]
    assert expired.status() == "dead"
    assert client.xlen(keys.stream) == 0


def test_stop_hands_a_running_task_back_without_spending_an_attempt(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("slow")
    running = asyncio.Event()

    async def slow(task: Task) -> None:
        running.set()
        await asyncio.sleep(60)

    registry = Registry()
    registry.register("slow", slow)
    handle = dispatcher.submit("slow", None)
    worker = make_worker(Settings.build(**{**settings.model_dump(), "grace_s": 0.1}), registry, ["slow"], burst=False)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(running.wait(), DEADLINE_S)
        worker.stop()
        await asyncio.wait_for(task, DEADLINE_S)

    asyncio.run(scenario())
    ((_, fields),) = client.xrange(keys.stream)
    delivery = codec.decode_entry("slow", "0-1", fields, 1 << 20)
    assert (delivery.task.id, delivery.attempt, delivery.reclaims) == (handle.id, 1, 0)
    assert handle.status() == "queued"
    assert client.xpending(keys.stream, GROUP)["pending"] == 0


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_a_handler_exception_is_retried_then_dead_lettered(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis, prefix: str, sync: bool
) -> None:
    calls: list[int] = []

    def fail(task: Task) -> None:
        calls.append(task.attempt)
        raise ValueError("always")

    async def afail(task: Task) -> None:
        fail(task)

    registry = Registry()
    handler: Callable[[Task], Any] = fail if sync else afail
    registry.register("fails", handler)
    fast = Settings.build(**{**settings.model_dump(), "backoff_base_s": 0.0, "backoff_max_s": 0.0})
    handle = dispatcher.submit("fails", None, max_retries=2)
    run(make_worker(fast, registry, ["fails"], concurrency=2))
    assert calls == [1, 2, 3]
    assert handle.status() == "dead"
