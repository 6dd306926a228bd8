"""The dispatch path on a real 3-primary Redis Cluster: capabilities on different primaries, one worker serving
them all, results through sharded pub/sub."""

from __future__ import annotations

from conftest import WorkerRunner
from helpers import wait_exit
from topology import Cluster

from dispatcher import Dispatcher, Settings
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
