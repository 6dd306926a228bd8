"""The fleet on a real 3-primary Redis Cluster: crash recovery (kill -9 of a worker), delayed tasks, retries,
dead letters, stats and the exporter, each over capabilities whose slots live on different primaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from apps.faulty import LEDGER_ENV, Ledger, worker_record
from apps.spread import CAPABILITIES as CAPS
from conftest import WorkerRunner
from helpers import free_tcp_port, sample_value, scrape, wait_until, worker_log
from topology import Cluster

from dispatcher import Dispatcher, Settings, Task, TaskDead
from dispatcher.cli.main import main
from dispatcher.store.keys import KeySpace

DEADLINE_S = 30.0
TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
CLI = "import sys; from dispatcher.cli.main import main; sys.exit(main())"


def ready(client: redis.RedisCluster, prefix: str, proc: subprocess.Popen[bytes]) -> None:
    def seen() -> bool:
        assert proc.poll() is None, worker_log(proc)
        return worker_record(client, prefix, proc.pid) is not None  # type: ignore[arg-type]

    wait_until(seen, timeout_s=DEADLINE_S, message=f"worker {proc.pid} to register")


def test_kill_9_of_a_worker_on_the_cluster_loses_no_task(
    cluster_client: redis.RedisCluster,
    cluster_settings: Settings,
    cluster_dispatcher: Dispatcher,
    cluster_worker: WorkerRunner,
    ledger: Ledger,
) -> None:
    prefix = cluster_settings.prefix
    env = {LEDGER_ENV: str(ledger.path)}
    args = ("--capability", "faulty.ledger", "--concurrency", "4", *TIMERS)
    victim = cluster_worker(*args, app="apps.faulty", env=env)
    ready(cluster_client, prefix, victim)
    tasks = [Task(capability="faulty.ledger", payload={"first_sleep_s": 60, "tag": i}) for i in range(4)]
    handles = cluster_dispatcher.submit_many(tasks)
    ids = [h.id for h in handles]
    wait_until(
        lambda: all(any(r["pid"] == victim.pid for r in ledger.records("start", t)) for t in ids),
        timeout_s=DEADLINE_S,
        message="all 4 running on the victim",
    )
    rescuer = cluster_worker(*args, app="apps.faulty", env=env)
    ready(cluster_client, prefix, rescuer)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert [h.result(timeout_s=DEADLINE_S) for h in handles] == [0, 1, 2, 3]
    for task_id in ids:
        last = ledger.records("start", task_id)[-1]
        assert (last["pid"], last["attempt"]) == (rescuer.pid, 2), "re-run by the rescuer as attempt 2"


def test_delayed_tasks_retries_and_dead_letters_across_primaries(
    cluster: Cluster,
    cluster_settings: Settings,
    cluster_dispatcher: Dispatcher,
    cluster_worker: WorkerRunner,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keyspace = KeySpace(cluster_settings.prefix)
    assert cluster.owner_port(keyspace.capability("fails").stream) != cluster.owner_port(
        keyspace.capability("cap1").stream
    )
    submitted_at = time.time()
    delayed = [cluster_dispatcher.submit(c, c, delay_s=1.0) for c in CAPS]
    assert all(h.info().delayed for h in delayed)
    failing = cluster_dispatcher.submit_many([Task(capability="fails", payload=i, max_retries=2) for i in range(3)])
    worker = cluster_worker(
        *(a for c in (*CAPS, "fails") for a in ("--capability", c)),
        *TIMERS, "--backoff-base-s", "0.05", "--backoff-jitter", "0",
        app="apps.spread",
    )  # fmt: skip
    assert [h.result(timeout_s=DEADLINE_S) for h in delayed] == list(CAPS)
    finished = [h.info().finished_at for h in delayed]
    assert all(f is not None and f - submitted_at >= 1.0 for f in finished), "ran once due, not before"
    for handle in failing:
        with pytest.raises(TaskDead):
            handle.result(timeout_s=DEADLINE_S)
    assert worker.poll() is None, worker_log(worker)
    capsys.readouterr()
    connection = ["--redis-url", cluster.url, "--prefix", cluster_settings.prefix]
    assert main(["dlq", *connection, "list", "fails", "--json"]) == 0
    letters = json.loads(capsys.readouterr().out)
    assert sorted(letter["task_id"] for letter in letters) == sorted(h.id for h in failing)
    assert all((letter["reason"], letter["attempt"]) == ("max_retries", 3) for letter in letters), "2 retries, buried"


def test_stats_and_exporter_read_every_primary(
    cluster: Cluster,
    cluster_settings: Settings,
    cluster_dispatcher: Dispatcher,
    capsys: pytest.CaptureFixture[str],
    tmp_path: object,
) -> None:
    for i, capability in enumerate(CAPS):
        for _ in range(i + 1):
            cluster_dispatcher.submit(capability, "x")
        cluster_dispatcher.submit(capability, "later", delay_s=3600)
    capsys.readouterr()
    assert main(["stats", "--json", "--redis-url", cluster.url, "--prefix", cluster_settings.prefix]) == 0
    stats = json.loads(capsys.readouterr().out)
    by_name = {c["name"]: c for c in stats["capabilities"]}
    assert {c: (by_name[c]["waiting"], by_name[c]["delayed"]) for c in CAPS} == {
        "cap1": (1, 1),
        "cap2": (2, 1),
        "cap3": (3, 1),
    }

    port = free_tcp_port()
    argv = [sys.executable, "-c", CLI, "exporter", "--redis-url", cluster.url, "--prefix", cluster_settings.prefix,
            "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        families = wait_until(lambda: scrape(port), timeout_s=DEADLINE_S, message="the exporter to serve")
        waiting = {c: sample_value(families, "dispatcher_tasks_waiting", "dispatcher_tasks_waiting", capability=c)
                   for c in CAPS}  # fmt: skip
        assert waiting == {"cap1": 1.0, "cap2": 2.0, "cap3": 3.0}
        assert sample_value(families, "dispatcher_redis_up", "dispatcher_redis_up") == 1.0
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_stats_redis_block_comes_from_every_primary(
    cluster: Cluster, cluster_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # The primaries' memory differs once one holds more: the fullest is the top-level block.
    ballast = f"{cluster_settings.prefix}:ballast"
    owner_port = cluster.owner_port(ballast)
    client = redis.RedisCluster(host="127.0.0.1", port=owner_port, socket_timeout=5)
    try:
        client.set(ballast, b"x" * 4_000_000)
        capsys.readouterr()
        assert main(["stats", "--json", "--redis-url", cluster.url, "--prefix", cluster_settings.prefix]) == 0
        stats = json.loads(capsys.readouterr().out)
    finally:
        client.delete(ballast)
        client.close()
    nodes = stats["redis_nodes"]
    assert sorted(n["node"] for n in nodes) == sorted(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    assert all(set(n) == {"node", "version", "used_memory", "maxmemory", "maxmemory_policy"} for n in nodes)
    fullest = max(nodes, key=lambda n: n["used_memory"])
    assert fullest["node"] == f"127.0.0.1:{owner_port}", "the primary holding the ballast uses the most memory"
    assert stats["redis"] == {k: v for k, v in fullest.items() if k != "node"}, "the top-level block is the fullest"
