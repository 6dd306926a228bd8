"""The cost of ``dispatcher stats`` at fleet scale (issue 13): ``stats.collect()`` over 100 capabilities, 1,000
registered workers and 10,000 running (pending) tasks, with every field stats shows in play.

The fleet is built on the bench's private Redis: per capability 20 waiting tasks, 100 running ones spread over
its 10 live workers (10 each), a delayed task, a dead letter, a stale consumer (in the group, no heartbeat), a
filled throughput ring, and one capability in ten paused. ``collect()`` is timed ``runs`` times; the median is
the figure (target ≤ 100 ms). Run it alone with ``scripts/bench --stats-cost``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import redis

from benchlib.env import RedisServer
from dispatcher import Dispatcher, KeySpace, Settings, Task
from dispatcher.fleet.stats import collect
from dispatcher.store import throughput
from dispatcher.store.codec import WorkerRecord, encode_worker
from dispatcher.store.gateway import Command, Gateway
from dispatcher.store.keys import GROUP

PREFIX = "b-stats-cost"


def build(client: redis.Redis, settings: Settings, capabilities: int, workers: int, running: int) -> None:
    """The fleet described in the module docstring (``workers`` and ``running`` spread evenly)."""
    ks = KeySpace(settings.prefix)
    names = [f"cap-{i:03d}" for i in range(capabilities)]
    per_cap_workers, per_cap_running = workers // capabilities, running // capabilities
    with Dispatcher(settings, client=client) as d:
        for n in names:
            d.submit_many(Task(capability=n, payload=i) for i in range(per_cap_running + 20))
        d.submit_many(Task(capability=n, payload=0, not_before=time.time() + 3600) for n in names)
    now = time.time()
    bucket = int(now // throughput.BUCKET_S)
    for i, n in enumerate(names):
        keys = ks.capability(n)
        pipe = client.pipeline(transaction=False)
        pipe.xgroup_create(keys.stream, GROUP, "0", mkstream=True)
        for w in range(per_cap_workers):
            consumer = f"{n}-w{w}"
            pipe.xreadgroup(GROUP, consumer, {keys.stream: ">"}, count=per_cap_running // per_cap_workers)
            pipe.set(keys.heartbeat(consumer), consumer, px=600_000)
            record = WorkerRecord(consumer, "bench", w, (n,), 10, 10, "0", now, now, {n: "closed"})
            pipe.hset(ks.workers, consumer, encode_worker(record))
        pipe.xgroup_createconsumer(keys.stream, GROUP, f"{n}-gone")  # stale: no heartbeat
        pipe.xadd(keys.dead, {"reason": "bench"})
        for b in range(bucket - 11, bucket + 1):
            slot = b % throughput.RING
            pipe.hset(keys.throughput, mapping={f"b{slot}": b, f"c{slot}": 50, f"f{slot}": 1})
        if i % 10 == 0:
            pipe.set(keys.paused, "1")
        pipe.execute()


def run(server: RedisServer, capabilities: int, workers: int, running: int, runs: int) -> dict[str, float]:
    """Median and best time of ``collect()`` in ms, and the round trips one call takes."""
    client = server.client()
    client.flushall()
    settings = Settings.build(redis_url=server.url, prefix=PREFIX)
    build(client, settings, capabilities, workers, running)
    gateway = _Counting(client, settings.redis_url)
    timings = []
    for _ in range(runs):
        gateway.round_trips = 0
        t0 = time.perf_counter()
        fleet = collect(gateway, KeySpace(settings.prefix))
        timings.append((time.perf_counter() - t0) * 1000)
    t = fleet.totals
    assert len(fleet.capabilities) == capabilities and len(fleet.workers) == workers, t
    assert (t.running, t.stale_consumers, t.paused) == (running, capabilities, capabilities // 10), t
    client.close()
    return {"median_ms": statistics.median(timings), "best_ms": min(timings), "round_trips": gateway.round_trips}


class _Counting(Gateway):
    """A gateway that counts its round trips."""

    round_trips = 0

    def send(self, commands: Sequence[Command]) -> list[Any]:
        self.round_trips += 1
        return super().send(commands)
