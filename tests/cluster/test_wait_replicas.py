"""``wait_replicas``: a submit returns only once that many replicas hold its writes; fewer within the timeout is
``RedisUnavailable`` with the written handles, never a plain success."""

from __future__ import annotations

import asyncio

import pytest
import redis
from topology import Cluster, SentinelSet

from dispatcher import AsyncDispatcher, Dispatcher, RedisUnavailable, Settings, Task
from dispatcher.store.keys import KeySpace


def test_wait_replicas_through_sentinel(sentinel_set: SentinelSet, sentinel_settings: Settings) -> None:
    with Dispatcher(sentinel_settings) as dispatcher:
        handle = dispatcher.submit("cap1", "kept", wait_replicas=1)
        # Confirmed by the replica: the entry is there already, no replication lag to wait for.
        stream = KeySpace(sentinel_settings.prefix).capability("cap1").stream
        assert sentinel_set.replica.client().xlen(stream) >= 1
        with pytest.raises(RedisUnavailable, match="confirmed by 1 of wait_replicas=2") as caught:
            dispatcher.submit("cap1", "unconfirmed", wait_replicas=2)
        assert caught.value.submitted is not None and len(caught.value.submitted) == 1
        assert handle.status() == "queued"


def test_wait_replicas_setting_on_a_cluster_without_replicas_is_never_a_false_success(
    cluster: Cluster, cluster_settings: Settings
) -> None:
    settings = Settings.build(**{**cluster_settings.model_dump(), "wait_replicas": 1, "wait_replicas_timeout_s": 0.2})
    with Dispatcher(settings) as dispatcher:
        with pytest.raises(RedisUnavailable, match="confirmed by 0 of wait_replicas=1"):
            dispatcher.submit_many([Task(capability=c, payload=c) for c in ("cap1", "cap2", "cap3")])
        assert len(dispatcher.submit("cap1", "no wait", wait_replicas=0).id) > 0


def test_async_wait_replicas_on_a_cluster_without_replicas_is_never_a_false_success(
    cluster: Cluster, cluster_settings: Settings
) -> None:
    async def scenario() -> None:
        async with AsyncDispatcher(cluster_settings) as dispatcher:
            tasks = [Task(capability=c, payload=c) for c in ("cap1", "cap2", "cap3")]
            with pytest.raises(RedisUnavailable, match="confirmed by 0 of wait_replicas=1") as caught:
                await dispatcher.submit_many(tasks, wait_replicas=1)
            submitted = caught.value.submitted
            assert submitted is not None and [h.id for h in submitted] == [t.id for t in tasks]
            assert [await h.status() for h in submitted] == ["queued"] * 3, "written, only not confirmed"

    asyncio.run(scenario())


def test_async_wait_replicas_on_a_replicated_cluster_confirms_each_primarys_share(
    replicated_cluster: Cluster, prefix: str
) -> None:
    settings = Settings.build(redis_url=replicated_cluster.url, prefix=prefix, wait_replicas=1)
    keyspace = KeySpace(prefix)
    capabilities = ("cap1", "cap2", "cap3")
    owners = {replicated_cluster.owner_port(keyspace.capability(c).stream) for c in capabilities}
    assert len(owners) == 3, "the capabilities' slots are on the three primaries"

    primaries = [n for n in replicated_cluster.nodes if n.port in owners]

    def waits() -> list[int]:
        return [int(n.client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0)) for n in primaries]

    async def scenario() -> tuple[list[str], list[int]]:
        async with AsyncDispatcher(settings) as dispatcher:
            # Loads the scripts on the new cluster (a NOSCRIPT retry sends its WAIT again) and registers them.
            await dispatcher.submit_many([Task(capability=c, payload="warm") for c in capabilities])
            before = waits()
            handles = await dispatcher.submit_many([Task(capability=c, payload=c) for c in capabilities])
            after = waits()
            return [await h.status() for h in handles], [a - b for a, b in zip(after, before, strict=True)]

    statuses, waited = asyncio.run(scenario())
    assert statuses == ["queued"] * 3
    assert waited == [1, 1, 1], "one WAIT on each primary, behind its own share (WAIT counts its connection's writes)"
    # Confirmed by each primary's replica: the entries are on the replicas already, no lag to wait for.
    replicas = [n for n in replicated_cluster.nodes if n.client().info("replication")["role"] == "slave"]
    streams = {c: keyspace.capability(c).stream for c in capabilities}
    on_replicas = {c: sum(replica_has(n.client(), s) for n in replicas) for c, s in streams.items()}
    assert on_replicas == dict.fromkeys(capabilities, 1), "each stream on its primary's replica"


def replica_has(replica: redis.Redis, key: str) -> int:
    """Whether a cluster replica holds ``key`` (READONLY on the same connection; a replica of another primary's
    slots answers MOVED: it does not)."""
    pipe = replica.pipeline(transaction=False)
    pipe.execute_command("READONLY")
    pipe.exists(key)
    found = pipe.execute(raise_on_error=False)[1]
    return 0 if isinstance(found, redis.exceptions.MovedError) else int(found)


def test_sync_wait_replicas_on_a_replicated_cluster_confirms_each_primarys_share(
    replicated_cluster: Cluster, prefix: str
) -> None:
    settings = Settings.build(redis_url=replicated_cluster.url, prefix=prefix, wait_replicas=1)
    capabilities = ("cap1", "cap2", "cap3")
    with Dispatcher(settings) as dispatcher:
        dispatcher.submit_many([Task(capability=c, payload="warm") for c in capabilities])
        handles = dispatcher.submit_many([Task(capability=c, payload=c) for c in capabilities])
        assert [h.status() for h in handles] == ["queued"] * 3
