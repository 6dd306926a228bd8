"""A live worker mends its slots against what Redis says its consumer holds (issue 11, item 2), driven in-process.

Redis and a worker drift apart when Redis loses or regains state under the worker: the reaper leaves live
consumers alone, so only the worker itself can mend it. Reconciling runs every heartbeat TTL (2 s here).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from helpers import serve_worker, until

from dispatcher import Dispatcher, Settings, Task
from dispatcher.store import codec
from dispatcher.store.keys import GROUP, KeySpace
from workers import Registry, Worker


def serve(settings: Settings, registry: Registry, capability: str, scenario: Callable[[Worker], Awaitable[Any]]) -> Any:
    return serve_worker(settings, registry, capability, scenario, upkeep=False)


def test_running_slots_redis_no_longer_holds_are_freed(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("slow")
    done: list[int] = []

    async def slow(task: Task) -> int:
        if task.payload == "stuck":
            await asyncio.sleep(60)
        done.append(1)
        return 1

    registry = Registry()
    registry.register("slow", slow)
    stuck = dispatcher.submit_many([Task(capability="slow", payload="stuck") for _ in range(4)])

    async def scenario(worker: Worker) -> float:
        await until(lambda: len(worker.slots.held) == 4, "every slot taken")
        # Redis forgets what the consumer holds (as after a failover to a replica that never saw those reads).
        client.execute_command("XGROUP", "DELCONSUMER", keys.stream, GROUP, worker.name)
        began = time.monotonic()
        later = dispatcher.submit("slow", "fine")
        await until(lambda: later.status() == "succeeded", "a new task served")
        return time.monotonic() - began

    took = serve(settings, registry, "slow", scenario)
    print(f"\na new task was served {took:.1f} s after Redis forgot the worker's 4 entries (reconcile every 2 s)")
    assert done, "the new task ran"
    assert all(h.status() == "queued" for h in stuck), "the forgotten entries wait in the stream to be read again"


def test_entries_redis_says_the_consumer_holds_are_run(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("echo")
    registry = Registry()
    registry.register("echo", lambda task: task.payload)

    async def scenario(worker: Worker) -> list[Any]:
        await until(lambda: client.hexists(KeySpace(prefix).workers, worker.name), "the worker registered")
        # Entries land in this consumer's pending list without the worker knowing: as a read whose reply was
        # lost, or a restart from a snapshot taken while it held them. Nothing else ever delivers them again.
        # Added and read in one transaction, so the worker's blocked read is never served them.
        tasks = [Task(capability="echo", payload=i) for i in range(3)]
        pipe = client.pipeline(transaction=True)
        for task in tasks:
            fields = codec.entry_fields(codec.encode_task(task, 1 << 20))
            pipe.xadd(keys.stream, dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]
        pipe.xreadgroup(GROUP, worker.name, {keys.stream: ">"}, count=10)
        pipe.execute()
        assert len(client.xpending_range(keys.stream, GROUP, "-", "+", 10, consumername=worker.name)) == 3
        handles = [dispatcher.handle(t.id, "echo") for t in tasks]
        await until(lambda: all(h.status() == "succeeded" for h in handles), "the unknown entries run")
        return [h.result(timeout_s=1) for h in handles]

    assert serve(settings, registry, "echo", scenario) == [0, 1, 2]


def test_entries_settled_while_a_pending_read_is_out_are_not_run_again(
    settings: Settings, dispatcher: Dispatcher
) -> None:
    """Entries settle on the settler's connection while the reader's XPENDING, or its re-read of its own pending
    entries, is out: an entry settled in between is neither unknown nor run again. The reader is made to look
    at each reply 20 ms late (as on a busy host), and reconciles every few ms under a stream of short tasks."""
    runs: Counter[str] = Counter()

    async def quick(task: Task) -> int:
        runs[task.id] += 1
        await asyncio.sleep(task.payload * 0.005)
        return 1

    registry = Registry()
    registry.register("quick", quick)
    # 0-45 ms: some run on across a reply's 20 ms, others end within it
    handles = dispatcher.submit_many([Task(capability="quick", payload=i % 10) for i in range(400)])

    async def scenario(worker: Worker) -> None:
        reader = worker.reader
        run = reader.gateway.run

        async def late(op: Any) -> Any:
            reply = await run(op)
            await asyncio.sleep(0.02)  # the settler's replies are handled first
            return reply

        reader.gateway.run = late  # type: ignore[method-assign]
        reader.reconcile_s = 0.005
        reader._next_reconcile = 0.0  # from now on, not one heartbeat TTL after the start
        await until(lambda: len(runs) == len(handles), "every task ran")
        await until(lambda: not worker.slots.held, "every entry settled")

    serve(settings, registry, "quick", scenario)
    twice = {t: n for t, n in runs.items() if n > 1}
    assert not twice, f"{len(twice)} of {len(runs)} tasks run twice by one live worker"
