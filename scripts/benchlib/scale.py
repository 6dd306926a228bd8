"""Cost of scale: ``stats.collect`` over a large fleet, and a reaper pass over a large pending list."""

from __future__ import annotations

import statistics
import time

import redis

from benchlib.common import PAYLOAD
from benchlib.env import RedisServer
from dispatcher import Dispatcher, KeySpace, Settings, Task
from dispatcher.fleet.reaper import Reaper
from dispatcher.fleet.stats import collect
from dispatcher.store import codec
from dispatcher.store.codec import WorkerRecord, encode_worker
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP


def _build_fleet(client: redis.Redis, settings: Settings, capabilities: int, workers: int) -> None:
    """``capabilities`` capabilities with waiting, running, delayed and dead tasks; ``workers`` workers, each
    registered with a live heartbeat, spread evenly over the capabilities."""
    ks = KeySpace(settings.prefix)
    names = [f"cap-{i:03d}" for i in range(capabilities)]
    with Dispatcher(settings, client=client) as d:
        d.submit_many(Task(capability=n, payload=i) for n in names for i in range(20))
        d.submit_many(Task(capability=n, payload=0, not_before=time.time() + 3600) for n in names)
    pipe = client.pipeline(transaction=False)
    for n in names:
        keys = ks.capability(n)
        pipe.xgroup_create(keys.stream, GROUP, "0", mkstream=True)
        pipe.xreadgroup(GROUP, f"{n}-w0", {keys.stream: ">"}, count=5)
        pipe.xadd(keys.dead, {"reason": "bench"})
    now = time.time()
    for w in range(workers):
        n = names[w % capabilities]
        consumer = f"{n}-w{w}"
        pipe.set(ks.capability(n).heartbeat(consumer), consumer, px=600_000)
        record = WorkerRecord(consumer, "bench", w, (n,), 10, 0, "0", now, now, {n: "closed"})
        pipe.hset(ks.workers, consumer, encode_worker(record))
    pipe.execute()


def stats(server: RedisServer, capabilities: int, workers: int, runs: int) -> dict[str, float]:
    """Median and best time of ``stats.collect()`` (what ``dispatcher stats`` runs), in ms."""
    client = server.client()
    client.flushall()
    settings = Settings.build(redis_url=server.url, prefix="b-stats")
    _build_fleet(client, settings, capabilities, workers)
    gateway = Gateway(client, settings.redis_url)
    timings = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fleet = collect(gateway, KeySpace(settings.prefix))
        timings.append((time.perf_counter() - t0) * 1000)
    assert len(fleet.capabilities) == capabilities and len(fleet.workers) == workers, fleet.totals
    client.close()
    return {"median_ms": statistics.median(timings), "best_ms": min(timings)}


def _pel(client: redis.Redis, settings: Settings, owner: str, n: int) -> None:
    """``n`` tasks delivered to ``owner`` and never settled (its pending list holds ``n`` entries)."""
    ks = KeySpace(settings.prefix)
    keys = ks.capability("echo")
    client.sadd(ks.capabilities, "echo")
    client.xgroup_create(keys.stream, GROUP, "0", mkstream=True)
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, n - start)):
            task = Task(capability="echo", payload=PAYLOAD)
            fields = codec.entry_fields(codec.encode_task(task, 1 << 20))
            pipe.xadd(keys.stream, dict(zip(fields[::2], fields[1::2], strict=True)))
        pipe.execute()
        client.xreadgroup(GROUP, owner, {keys.stream: ">"}, count=1000)


def reaper(server: RedisServer, n: int, owner_alive: bool) -> dict[str, float]:
    """One ``Reaper.run_once()`` with an ``n``-entry pending list of one consumer, dead or alive."""
    client = server.client()
    client.flushall()
    settings = Settings.build(redis_url=server.url, prefix="b-reap", heartbeat_ttl_s=1.0)
    keys = KeySpace(settings.prefix).capability("echo")
    _pel(client, settings, "owner", n)
    if owner_alive:
        client.set(keys.heartbeat("owner"), "owner", px=600_000)
    while int(client.info("server")["uptime_in_seconds"]) < 2:  # the reaper skips a just-restarted Redis
        time.sleep(0.1)
    gateway = Gateway(client, settings.redis_url)
    t0 = time.perf_counter()
    report = Reaper(gateway, settings).run_once()
    seconds = time.perf_counter() - t0
    left = int(client.xpending(keys.stream, GROUP)["pending"])
    client.close()
    return {"seconds": seconds, "reclaimed": report.reclaimed, "pending_after": left}
