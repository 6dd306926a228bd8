"""The dispatch path on a real 3-primary Redis Cluster: capabilities on different primaries, one worker serving
them all, results through sharded pub/sub."""

from __future__ import annotations

import asyncio
import threading

import pytest
from apps.spread import CAPABILITIES as CAPS
from conftest import RedisServer, WorkerRunner
from helpers import wait_exit, wait_until
from topology import Cluster

from dispatcher import AsyncDispatcher, Dispatcher, Settings, TaskHandle
from dispatcher.producer import subscriptions
from dispatcher.store import scripts
from dispatcher.store.keys import KeySpace

CAPABILITIES = ("echo", "noop", "sleep")


def spread(cluster: Cluster, prefix: str) -> dict[str, int]:
    """The primary (port) that owns each capability's slot."""
    keyspace = KeySpace(prefix)
    return {c: cluster.owner_port(keyspace.capability(c).stream) for c in CAPABILITIES}


def test_capabilities_on_different_primaries_round_trip_through_one_worker(
    cluster: Cluster, cluster_settings: Settings, cluster_dispatcher: Dispatcher, cluster_worker: WorkerRunner
) -> None:
    owners = spread(cluster, cluster_settings.prefix)
    assert len(set(owners.values())) >= 2, f"the capabilities' slots should spread over primaries: {owners}"
    handles = [cluster_dispatcher.submit("echo", {"n": i}) for i in range(20)]
    handles += [cluster_dispatcher.submit("noop", i) for i in range(20)]
    handles += [cluster_dispatcher.submit("sleep", 0) for _ in range(5)]
    worker = cluster_worker(*(a for c in CAPABILITIES for a in ("--capability", c)), "--burst")
    assert wait_exit(worker, timeout_s=60) == 0, cluster_worker.log(worker)
    assert [h.result(timeout_s=10) for h in handles[:20]] == [{"n": i} for i in range(20)]
    assert all(h.status() == "succeeded" for h in handles)


def test_result_is_announced_on_the_shard_of_its_capability(
    cluster: Cluster, cluster_settings: Settings, cluster_dispatcher: Dispatcher, cluster_worker: WorkerRunner
) -> None:
    # A waiter subscribed before the task runs is woken by the SPUBLISH of the settle script: the shard that owns
    # the channel counts it, the other primaries never see it.
    keys = KeySpace(cluster_settings.prefix).capability("echo")
    owner = cluster.owner_port(keys.stream)
    handle = cluster_dispatcher.submit("echo", "hello")
    channel = keys.channel(handle.id)
    waiter = cluster.node(owner).client().pubsub()
    waiter.ssubscribe(channel)
    assert waiter.get_sharded_message(timeout=5)["type"] == "ssubscribe"
    before = {n.port: _pubsub_calls(n) for n in cluster.nodes}
    worker = cluster_worker("--capability", "echo", "--burst")
    assert wait_exit(worker, timeout_s=60) == 0, cluster_worker.log(worker)
    message = waiter.get_sharded_message(timeout=10)
    assert message is not None and message["type"] == "smessage" and message["channel"].decode() == channel
    assert handle.result(timeout_s=10) == "hello"
    after = {n.port: _pubsub_calls(n) for n in cluster.nodes}
    assert after[owner]["spublish"] > before[owner]["spublish"]
    assert all(after[p]["publish"] == before[p]["publish"] for p in after), "nothing broadcast with PUBLISH"
    waiter.close()


def _pubsub_calls(node: RedisServer) -> dict[str, int]:
    stats = node.client().info("commandstats")
    return {verb: int(stats.get(f"cmdstat_{verb}", {}).get("calls", 0)) for verb in ("publish", "spublish")}


def test_result_waits_on_sharded_pubsub_across_primaries(
    cluster: Cluster,
    cluster_settings: Settings,
    cluster_dispatcher: Dispatcher,
    cluster_worker: WorkerRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No periodic re-read within the test: each result() below returns only when its announcement wakes it (the
    # re-read after its SSUBSCRIBE was confirmed ran before any worker started).
    monkeypatch.setattr(subscriptions, "RECHECK_S", 3600.0)
    keyspace = KeySpace(cluster_settings.prefix)
    handles = [cluster_dispatcher.submit(c, c) for c in CAPS]
    owners = {cluster.owner_port(keyspace.capability(c).stream) for c in CAPS}
    assert len(owners) == 3, "one capability per primary"
    results: dict[str, object] = {}

    def wait(h: TaskHandle) -> None:
        results[h.capability] = h.result(timeout_s=60)

    threads = [threading.Thread(target=wait, args=(h,)) for h in handles]
    for t in threads:
        t.start()

    def subscribed() -> bool:
        for h in handles:
            channel = keyspace.capability(h.capability).channel(h.id)
            node = cluster.node(cluster.owner_port(channel)).client()
            if node.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] < 1:
                return False
        return True

    wait_until(subscribed, timeout_s=20)
    worker = cluster_worker(*(a for c in CAPS for a in ("--capability", c)), "--burst", app="apps.spread")
    assert wait_exit(worker, timeout_s=60) == 0, cluster_worker.log(worker)
    for t in threads:
        t.join(timeout=70)
    assert results == {c: c for c in CAPS}


def test_noscript_on_a_primary_loads_the_script_there(
    cluster: Cluster, cluster_settings: Settings, cluster_dispatcher: Dispatcher
) -> None:
    # What a failover or resharding leaves: a primary without our scripts (Redis 7 does not replicate them).
    cluster_dispatcher.submit("cap1", "warm")
    sha = scripts.sharded("submit").sha
    for node in cluster.nodes:
        node.client().script_flush()
        assert node.client().script_exists(sha) == [False]
    handles = [cluster_dispatcher.submit(c, c) for c in CAPS]
    assert all(h.status() == "queued" for h in handles)
    assert all(node.client().script_exists(sha) == [True] for node in cluster.nodes), "loaded on every primary"


def test_async_dispatcher_round_trip_on_the_cluster(cluster_settings: Settings, cluster_worker: WorkerRunner) -> None:
    async def scenario() -> list[object]:
        async with AsyncDispatcher(cluster_settings) as dispatcher:
            handles = [await dispatcher.submit(c, {"c": c}) for c in CAPS]
            worker = cluster_worker(*(a for c in CAPS for a in ("--capability", c)), "--burst", app="apps.spread")
            results = await asyncio.gather(*(h.result(timeout_s=60) for h in handles))
            assert await asyncio.to_thread(wait_exit, worker, 60) == 0, cluster_worker.log(worker)
            return list(results)

    assert asyncio.run(scenario()) == [{"c": c} for c in CAPS]
