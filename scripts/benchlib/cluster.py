"""``scripts/bench --cluster``: three capabilities drained on one Redis vs spread over a 3-primary Redis Cluster,
and the plain single-server drain of this tree against a baseline tree (``--baseline-src``) in the same run.

On a 2-core machine the wall-clock gain of more shards is capped by the CPU the workers need; the figure that
shows scale-out is Redis CPU per task per shard (each shard's own ``used_cpu_*`` over the tasks of its slots):
it must not grow with shards. One capability drained on the 3-primary cluster (one shard busy, two idle) tells
what cluster mode costs a shard from what three busy shards on two cores cost each other. With
``--baseline-src`` the 3-primary drain also runs with the baseline's workers. Each node's commands and read
events per task (``INFO commandstats``, ``INFO stats``, reset before each drain) are reported beside the CPU.
Every process is started here and stopped by PID.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from chaoslib.procs import Procs
from chaoslib.topologies import ClusterProcs

from benchlib.common import PAYLOAD, WORKERS, redis_cpu_s
from benchlib.env import SCRIPTS, Processes, RedisServer
from benchlib.handlers import SHARDED
from dispatcher import Dispatcher, Settings, Task
from dispatcher.store.keys import KeySpace

PREFIX = "b-cluster"
WORKER_ARGS = ["--app", "benchlib.handlers", "--concurrency", "100", "--log-level", "WARNING"]


def _queue(url: str, capabilities: tuple[str, ...], n_per_cap: int) -> None:
    with Dispatcher(Settings.build(redis_url=url, prefix=PREFIX)) as d:
        for capability in capabilities:
            for start in range(0, n_per_cap, 1000):
                count = min(1000, n_per_cap - start)
                d.submit_many([Task(capability=capability, payload=PAYLOAD) for _ in range(count)])


def _wait_drained(client: Any, capabilities: tuple[str, ...], timeout_s: float) -> float:
    streams = [KeySpace(PREFIX).capability(c).stream for c in capabilities]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(client.xlen(s) == 0 for s in streams):
            return time.perf_counter()
        time.sleep(0.005)
    raise RuntimeError(f"not drained within {timeout_s} s")


def drain(
    url: str,
    client: Any,
    nodes: list[redis.Redis],
    capabilities: tuple[str, ...],
    n_per_cap: int,
    timeout_s: float,
    source: Path | None = None,
    busy: int | None = None,
) -> dict[str, Any]:
    """Queue ``n_per_cap`` tasks per capability, then drain them with 2 workers serving all of them (their code
    from ``source`` when given): tasks/s from the workers' spawn, and Redis CPU per task (in all, and per node
    over the tasks of the capabilities it owns: each node one capability's; with ``busy``, only node ``busy``,
    which owns them all)."""
    for node in nodes:
        node.flushall()
    _queue(url, capabilities, n_per_cap)
    procs = Processes()
    for node in nodes:
        node.config_resetstat()  # commandstats and the read/write event counters count this drain only
    cpu0 = [redis_cpu_s(n) for n in nodes]
    path = f"{source}:{SCRIPTS}" if source else str(SCRIPTS)
    env = {"DISPATCHER_REDIS_URL": url, "DISPATCHER_PREFIX": PREFIX, "PYTHONPATH": path}
    argv = [sys.executable, "-m", "workers", *WORKER_ARGS, *(a for c in capabilities for a in ("-c", c))]
    t0 = time.perf_counter()
    for _ in range(WORKERS):
        procs.spawn(argv, env, cwd=source or SCRIPTS.parent)
    try:
        end = _wait_drained(client, capabilities, timeout_s)
    finally:
        procs.stop_all()
    cpu = [redis_cpu_s(n) - c for n, c in zip(nodes, cpu0, strict=True)]
    total = n_per_cap * len(capabilities)
    tasks_per_node = [total / len(nodes)] * len(nodes)  # one capability per primary; all on one server
    shards = list(range(len(nodes)))
    if busy is not None:  # the per-shard figures of the busy node only (the idle ones' CPU counts in the total)
        tasks_per_node, shards = [float(total)] * len(nodes), [busy]
    return {
        "tasks": total,
        "rate": total / (end - t0),
        "redis_cpu_us_per_task": sum(cpu) / total * 1e6,
        "redis_cpu_us_per_task_per_shard": [round(cpu[i] / tasks_per_node[i] * 1e6, 2) for i in shards],
        "per_task_per_shard": [_per_task(nodes[i], tasks_per_node[i]) for i in shards],
    }


def _per_task(node: redis.Redis, tasks: float) -> dict[str, float]:
    """What one node did per task of its slots since its counters were reset: each command's calls and
    microseconds (``INFO commandstats``), and its read and write events (``INFO stats``: a pipeline that arrives
    in one read costs one event, whatever its length)."""
    out: dict[str, float] = {}
    for name, stat in node.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        out[f"{command} calls"] = round(stat["calls"] / tasks, 4)
        out[f"{command} us"] = round(stat["usec"] / tasks, 3)
    stats = node.info("stats")
    out["read events"] = round(stats["total_reads_processed"] / tasks, 4)
    out["write events"] = round(stats["total_writes_processed"] / tasks, 4)
    return out


def run(n_per_cap: int, timeout_s: float, baseline: Path | None, repeat: int) -> list[tuple[str, dict[str, Any]]]:
    """Every figure of ``--cluster``, each the median of ``repeat`` runs; (label, figures) rows."""
    rows: list[tuple[str, dict[str, Any]]] = []
    server = RedisServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    procs = Procs(workdir)
    try:
        single = server.client()
        cluster = ClusterProcs(procs, workdir, primaries=3, replicas=0).start()
        one = ClusterProcs(procs, workdir, primaries=1, replicas=0).start()
        one_client = one.client()
        cluster_client = cluster.client()
        primaries = [n.client() for n in cluster.nodes]
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(repeat):
            runs.setdefault("3 capabilities, one Redis", []).append(
                drain(server.url, single, [single], SHARDED, n_per_cap, timeout_s)
            )
            runs.setdefault("3 capabilities, 1-node cluster", []).append(
                drain(one.url, one_client, [one.nodes[0].client()], SHARDED, n_per_cap, timeout_s)
            )
            runs.setdefault("3 capabilities, 3-primary cluster", []).append(
                drain(cluster.url, cluster_client, primaries, SHARDED, n_per_cap, timeout_s)
            )
            runs.setdefault("1 capability, 3-primary cluster (one shard busy)", []).append(
                drain(cluster.url, cluster_client, primaries, SHARDED[:1], n_per_cap * 3, timeout_s, busy=0)
            )
            if baseline is not None:
                runs.setdefault(f"3 capabilities, 3-primary cluster, baseline {baseline}", []).append(
                    drain(cluster.url, cluster_client, primaries, SHARDED, n_per_cap, timeout_s, source=baseline)
                )
            runs.setdefault("plain drain (1 capability, one Redis), this tree", []).append(
                drain(server.url, single, [single], SHARDED[:1], n_per_cap * 3, timeout_s)
            )
            if baseline is not None:
                runs.setdefault(f"plain drain (1 capability, one Redis), baseline {baseline}", []).append(
                    drain(server.url, single, [single], SHARDED[:1], n_per_cap * 3, timeout_s, source=baseline)
                )
        for label, figures in runs.items():
            rows.append((label, _median(figures)))
    finally:
        procs.stop_all()
        server.stop()
    return rows


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("rate", "redis_cpu_us_per_task"):
        out[key] = round(statistics.median(r[key] for r in runs), 2)
    shards = len(runs[0]["redis_cpu_us_per_task_per_shard"])
    out["redis_cpu_us_per_task_per_shard"] = [
        round(statistics.median(r["redis_cpu_us_per_task_per_shard"][i] for r in runs), 2) for i in range(shards)
    ]
    out["per_task_per_shard"] = []
    for i in range(shards):
        names = sorted(set().union(*(r["per_task_per_shard"][i] for r in runs)))
        out["per_task_per_shard"].append(
            {k: round(statistics.median(r["per_task_per_shard"][i].get(k, 0.0) for r in runs), 4) for k in names}
        )
    out["tasks"] = runs[0]["tasks"]
    return out


COUNTED = (
    ("EVALSHA", "evalsha calls"),
    ("EVALSHA µs", "evalsha us"),
    ("SET", "set calls"),
    ("(S)PUBLISH", "spublish calls", "publish calls"),
    ("XREADGROUP", "xreadgroup calls"),
    ("COMMAND µs", "command us"),
    ("GETKEYS", "command|getkeys calls"),
    ("read events", "read events"),
)
"""The columns of the per-shard table: a label, then the ``_per_task`` figures it adds up."""


def report(rows: list[tuple[str, dict[str, Any]]]) -> str:
    lines = ["| drain | tasks | tasks/s | Redis CPU µs/task | per shard µs/task |", "| --- | --- | --- | --- | --- |"]
    for label, f in rows:
        shards = ", ".join(f"{x:.1f}" for x in f["redis_cpu_us_per_task_per_shard"])
        lines.append(f"| {label} | {f['tasks']:,} | {f['rate']:,.0f} | {f['redis_cpu_us_per_task']:.1f} | {shards} |")
    lines += ["", "Per task of its slots, on each node (calls, or µs where named; INFO commandstats, INFO stats):", ""]
    lines += ["| drain | node | " + " | ".join(c[0] for c in COUNTED) + " |", "| --- " * (len(COUNTED) + 2) + "|"]
    for label, f in rows:
        for i, per in enumerate(f["per_task_per_shard"]):
            cells = [f"{sum(per.get(k, 0.0) for k in c[1:]):.3f}" for c in COUNTED]
            lines.append(f"| {label} | {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
