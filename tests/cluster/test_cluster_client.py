"""What our cluster clients send besides the work itself, counted on the real cluster's nodes: no
``COMMAND GETKEYS`` per script in a pipeline, and the command table read once per process."""

from __future__ import annotations

import asyncio

from topology import Cluster

from dispatcher import AsyncDispatcher, Dispatcher, Settings, Task
from dispatcher.store.connection import make_async_client, make_client


def calls(cluster: Cluster, command: str) -> int:
    """How many times every node of ``cluster`` ran ``command`` (an ``INFO commandstats`` name) so far."""
    total = 0
    for node in cluster.nodes:
        stat = node.client().info("commandstats").get(f"cmdstat_{command}")
        total += int(stat["calls"]) if stat else 0
    return total


def test_scripts_in_a_sync_pipeline_are_placed_without_command_getkeys(
    cluster: Cluster, cluster_settings: Settings
) -> None:
    with Dispatcher(cluster_settings) as dispatcher:
        dispatcher.submit("echo", "warm")  # the client's start-up and the script loads are not what is counted
        before = calls(cluster, "command|getkeys"), calls(cluster, "evalsha")
        tasks = [Task(capability=c, payload=i) for c in ("echo", "noop") for i in range(5)]
        handles = dispatcher.submit_many(tasks)
        after = calls(cluster, "command|getkeys"), calls(cluster, "evalsha")
        assert all(h.status() == "queued" for h in handles)
    assert after[1] > before[1], "the submits ran as scripts"
    assert after[0] == before[0], "no COMMAND GETKEYS round trip for a script's keys"


def test_a_process_reads_the_command_table_once_per_cluster(cluster: Cluster, cluster_settings: Settings) -> None:
    first = make_client(cluster_settings)
    try:
        first.ping()  # reads the table if no client of this process did yet
        before = calls(cluster, "command")
        for _ in range(3):
            client = make_client(cluster_settings)
            try:
                assert client.ping()
            finally:
                client.close()

        async def async_clients() -> None:
            for _ in range(3):
                client = make_async_client(cluster_settings)
                try:
                    assert await client.ping()
                finally:
                    await client.aclose()

        asyncio.run(async_clients())
        assert calls(cluster, "command") == before, "six more clients, no more COMMAND"
    finally:
        first.close()


def test_async_dispatcher_on_the_cluster_still_finds_its_keys(cluster_settings: Settings) -> None:
    async def scenario() -> list[str]:
        async with AsyncDispatcher(cluster_settings) as dispatcher:
            handles = [await dispatcher.submit(c, c) for c in ("echo", "noop", "sleep")]
            return [await h.status() for h in handles]

    assert asyncio.run(scenario()) == ["queued"] * 3
