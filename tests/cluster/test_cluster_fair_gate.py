"""The fair gate on a real 3-primary Redis Cluster: tasks with all four options (a tenant, a priority, a key under
a cap, units of a rate limit whose hash lives in its own slot) go through the gate's cross-slot steps (units on the
limit's slot, then the move on the capability's) and every one runs once; delayed and retried ones go through the
fairness lane (the rejoin set, then their tenant's queue) on the capability's slot and run once more each."""

from __future__ import annotations

import time

from helpers import wait_until, workers_in_threads
from topology import Cluster

from dispatcher import Dispatcher, Retry, Settings, Task
from dispatcher.fleet import ratelimits
from dispatcher.store import flow, limits
from workers import Registry


def test_tasks_with_every_option_run_once_across_slots(
    cluster: Cluster, cluster_settings: Settings, cluster_dispatcher: Dispatcher
) -> None:
    d = cluster_dispatcher
    ratelimits.define(d.gateway, d.core.keyspace, "api", 60_000.0, 100)
    ratelimits.set_concurrency(d.gateway, d.core.keyspace, "fairops", 2)
    keys, limit = d.core.keys("fairops"), d.core.keyspace.limit("api")
    node = cluster.nodes[0].client()
    slots = {int(node.execute_command("CLUSTER", "KEYSLOT", k)) for k in (keys.stream, limit.state)}
    assert len(slots) == 2  # so the gate's two steps go to two slots
    ran: list[tuple[str, int]] = []
    retried = {f"t{i}" for i in range(60) if i % 4 == 1}
    registry = Registry()

    def handler(task: Task) -> None:
        ran.append((str(task.payload), task.attempt))
        if task.payload in retried and task.attempt == 1:
            raise Retry(delay_s=0.1)

    registry.register("fairops", handler)
    tasks = [
        Task(
            capability="fairops",
            payload=f"t{i}",
            fairness_key=f"tenant-{i % 3}",
            priority=i % 10,
            concurrency_key=f"k{i % 5}",
            rate_limits={"api": 1},
            not_before=time.time() + 0.3 if i % 4 == 0 else None,
        )
        for i in range(60)
    ]
    with workers_in_threads(registry, ["fairops"], cluster_settings, count=1, concurrency=8):
        handles = d.submit_many(tasks)
        for h in handles:
            h.result(timeout_s=60)
        wait_until(lambda: len(ran) == 60 + len(retried), 30, message="every task ran")
    expected = [(f"t{i}", 1) for i in range(60)] + [(p, 2) for p in retried]
    assert sorted(ran) == sorted(expected)
    state = d.gateway.run(limits.exist(d.core.keyspace, ["api"]))[0]
    assert state is not None and state.tat_ms > 0  # the units were taken on the limit's own slot
    assert set(d.gateway.run(flow.holders(keys, [f"k{i}" for i in range(5)])).values()) <= {0}
    assert d.gateway.run(flow.fair_tenants([keys], 8)) == [[]]
    assert not d.gateway.client.exists(keys.rejoin, keys.delayed, keys.index)  # every lane walked to its end
