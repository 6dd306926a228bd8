"""Flow-control workloads (issue 14): tasks with a priority drained by 2 workers, a priority-9 task submitted behind
a backlog of priority-0 tasks, a rate limit under a backlog, per-key caps, and weighted tenants. Run them alone
with ``scripts/bench --flow``.

Every task here has a priority, so it goes through the ready set and the admitter (the window is the default 64).
Figures: drain rate (first start to last result), Redis commands per task (``INFO commandstats``, the scripts'
inner calls included), and for the jump: how many backlog tasks started between a priority-9 submit and its start,
and its submit-to-start time.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from benchlib.common import PAYLOAD, WORKERS, keys_of, outcomes, percentiles_ms, wait_ready
from benchlib.env import Processes, RedisServer
from dispatcher import Dispatcher, Settings, Task
from dispatcher.fleet import ratelimits

JUMPS = 20
"""Priority-9 tasks submitted, one at a time, while the backlog drains."""


def _commands(client: redis.Redis) -> int:
    return sum(int(v["calls"]) for k, v in client.info("commandstats").items() if k != "cmdstat_info")


def _wait_drained(client: redis.Redis, prefix: str, capability: str, timeout_s: float) -> float:
    """Until the index is empty: every task submitted before settled (the index holds queued, running, delayed and
    waiting tasks alike)."""
    keys = keys_of(prefix, capability)
    deadline = time.monotonic() + timeout_s
    while client.hlen(keys.index):
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {capability} not drained within {timeout_s} s")
        time.sleep(0.005)
    return time.time()


def drain(server: RedisServer, procs: Processes, n: int, timeout_s: float, kind: str = "priority") -> dict[str, Any]:
    """``n`` tasks queued, then 2 workers: tasks/s, Redis commands per task. ``kind``: "priority" (priorities
    0-9), "plain" (no option: today's path) or "all" (every task sets all four options: a priority 0-9, one of
    ``TENANTS`` tenants, one of ``KEYS`` concurrency keys capped at ``CAP``, and a unit of a limit whose rate
    does not bind: ``ALL_RATE_PER_MIN``)."""
    prefix, capability = f"b-flow-drain-{kind}", "echo"
    client = server.client()
    client.flushall()
    settings = Settings.build(redis_url=server.url, prefix=prefix)
    with Dispatcher(settings) as d:
        if kind == "all":
            ratelimits.define(d.gateway, d.core.keyspace, "bench-api", ALL_RATE_PER_MIN, ALL_BURST)
            ratelimits.set_concurrency(d.gateway, d.core.keyspace, capability, CAP)
        cmd0 = _commands(client)
        ids: list[str] = []
        for start in range(0, n, 1000):
            batch = [_task(kind, capability, i) for i in range(start, min(start + 1000, n))]
            ids.extend(h.id for h in d.submit_many(batch))
        submit_commands = _commands(client) - cmd0
    cmd1 = _commands(client)
    procs.workers(WORKERS, server.url, prefix, ["-c", capability, "--concurrency", "100"])
    end = _wait_drained(client, prefix, capability, timeout_s)
    run_commands = _commands(client) - cmd1
    records = outcomes(client, keys_of(prefix, capability), ids)
    first = min(r.finished_at for r in records)
    procs.stop_all()
    client.close()
    return {
        "rate": n / (end - first),
        "submit_commands_per_task": submit_commands / n,
        "run_commands_per_task": run_commands / n,
    }


TENANTS = 8
KEYS = 100
CAP = 8
"""100 keys of cap 8 allow 800 running: more than 2 workers' 200 slots and the window, so the cap binds little."""
ALL_RATE_PER_MIN = 6_000_000.0
ALL_BURST = 10_000
"""100,000 units/s, burst 10,000: a rate the drain does not reach, so the limit binds little (its take runs)."""


def _task(kind: str, capability: str, i: int) -> Task:
    if kind == "plain":
        return Task(capability=capability, payload=PAYLOAD)
    if kind == "priority":
        return Task(capability=capability, payload=PAYLOAD, priority=i % 10)
    return Task(
        capability=capability,
        payload=PAYLOAD,
        priority=i % 10,
        fairness_key=f"tenant-{i % TENANTS}",
        concurrency_key=f"key-{i % KEYS}",
        rate_limits={"bench-api": 1},
    )


def jump(server: RedisServer, procs: Processes, backlog: int, timeout_s: float) -> dict[str, Any]:
    """``backlog`` priority-0 tasks of ``bench.stamp`` queued, 2 workers started; while they drain, ``JUMPS``
    priority-9 tasks one at a time: backlog starts between each one's submit and its start, and its wait."""
    prefix, capability = "b-flow-jump", "bench.stamp"
    client = server.client()
    client.flushall()
    settings = Settings.build(redis_url=server.url, prefix=prefix)
    keys = keys_of(prefix, capability)
    with Dispatcher(settings) as d:
        low: list[str] = []
        for start in range(0, backlog, 1000):
            batch = [Task(capability=capability, payload=None, priority=0) for _ in range(min(1000, backlog - start))]
            low.extend(h.id for h in d.submit_many(batch))
        procs.workers(WORKERS, server.url, prefix, ["-c", capability, "--app", "benchlib.handlers"])
        wait_ready(client, prefix, WORKERS)
        urgent: list[tuple[str, float]] = []
        for _ in range(JUMPS):
            task = Task(capability=capability, payload=None, priority=9)
            d.submit(task)
            urgent.append((task.id, task.submitted_at))
            time.sleep(0.01)
        _wait_drained(client, prefix, capability, timeout_s)
    low_starts = sorted(float(r.value) for r in outcomes(client, keys, low))
    urgent_starts = [float(r.value) for r in outcomes(client, keys, [u for u, _ in urgent])]
    procs.stop_all()
    client.close()
    ahead, waits = [], []
    for (_, submitted), started in zip(urgent, urgent_starts, strict=True):
        ahead.append(sum(1 for s in low_starts if submitted < s < started))
        waits.append(started - submitted)
    still_waiting = sum(1 for s in low_starts if s > max(urgent_starts))
    ordered = sorted(ahead)
    return {
        "ahead_p50": ordered[len(ordered) // 2],
        "ahead_p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "ahead_max": ordered[-1],
        "wait": percentiles_ms(waits),
        "backlog_left_after_last_urgent": still_waiting,
    }


def _queue(d: Dispatcher, tasks: list[Task]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(tasks), 1000):
        ids.extend(h.id for h in d.submit_many(tasks[start : start + 1000]))
    return ids


def rate(server: RedisServer, procs: Processes, rate_per_s: int, seconds: float, timeout_s: float) -> dict[str, Any]:
    """A backlog of ``rate_per_s x seconds`` tasks of 1 unit of a limit of ``rate_per_s``/s (burst: one second's
    tenth), 4 workers: the rate seen after the burst, and the most starts in any 1 s window."""
    prefix, capability = "b-flow-rate", "bench.stamp"
    client = server.client()
    client.flushall()
    n, burst = int(rate_per_s * seconds), max(rate_per_s // 10, 1)
    with Dispatcher(Settings.build(redis_url=server.url, prefix=prefix)) as d:
        ratelimits.define(d.gateway, d.core.keyspace, "api", rate_per_s * 60.0, burst)
        ids = _queue(d, [Task(capability=capability, rate_limits={"api": 1}) for _ in range(n)])
    procs.workers(4, server.url, prefix, ["-c", capability, "--app", "benchlib.handlers"])
    _wait_drained(client, prefix, capability, timeout_s + seconds)
    starts = sorted(float(r.value) for r in outcomes(client, keys_of(prefix, capability), ids))
    procs.stop_all()
    client.close()
    busiest, j = 0, 0
    for i, s in enumerate(starts):
        while starts[j] < s - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    return {"rate": (n - burst) / (starts[-1] - starts[0]), "busiest_1s": busiest, "bound": rate_per_s + burst}


def concurrency(server: RedisServer, procs: Processes, keys_n: int, per_key: int, timeout_s: float) -> dict[str, Any]:
    """``keys_n`` keys x 20 tasks of 10 ms, cap ``per_key``, 4 workers x 16 slots: the most running at once per key
    (from the handlers' start and end times) and the drain time against the cap's ideal."""
    prefix, capability = "b-flow-cap", "bench.span"
    client = server.client()
    client.flushall()
    tasks = [Task(capability=capability, concurrency_key=f"k{k}") for _ in range(20) for k in range(keys_n)]
    with Dispatcher(Settings.build(redis_url=server.url, prefix=prefix)) as d:
        ratelimits.set_concurrency(d.gateway, d.core.keyspace, capability, per_key)
        ids = _queue(d, tasks)
    procs.workers(4, server.url, prefix, ["-c", capability, "--app", "benchlib.handlers", "--concurrency", "16"])
    _wait_drained(client, prefix, capability, timeout_s)
    spans = [r.value for r in outcomes(client, keys_of(prefix, capability), ids)]
    procs.stop_all()
    client.close()
    most = 0
    for key in {t.concurrency_key for t in tasks}:
        mine = [s for s, t in zip(spans, tasks, strict=True) if t.concurrency_key == key]
        edges = sorted([(a, 1) for a, _ in mine] + [(b, -1) for _, b in mine])
        running = 0
        for _, step in edges:
            running += step
            most = max(most, running)
    seconds = max(b for _, b in spans) - min(a for a, _ in spans)
    return {"most_running_per_key": most, "seconds": seconds, "ideal_seconds": 20 / per_key * 0.01}


def fairness(server: RedisServer, procs: Processes, per_tenant: int, timeout_s: float) -> dict[str, Any]:
    """Tenants of weights 3:2:1 with ``per_tenant`` tasks each, 2 workers: shares of the first half of the starts."""
    prefix, capability = "b-flow-fair", "bench.stamp"
    client = server.client()
    client.flushall()
    tasks = [Task(capability=capability, fairness_key=t) for _ in range(per_tenant) for t in ("c", "b", "a")]
    with Dispatcher(Settings.build(redis_url=server.url, prefix=prefix)) as d:
        for tenant, weight in (("a", 3), ("b", 2), ("c", 1)):
            ratelimits.set_weight(d.gateway, d.core.keyspace, capability, tenant, weight)
        ids = _queue(d, tasks)
    procs.workers(WORKERS, server.url, prefix, ["-c", capability, "--app", "benchlib.handlers"])
    _wait_drained(client, prefix, capability, timeout_s)
    starts = [float(r.value) for r in outcomes(client, keys_of(prefix, capability), ids)]
    procs.stop_all()
    client.close()
    ordered = [t.fairness_key for _, t in sorted(zip(starts, tasks, strict=True), key=lambda p: p[0])]
    head = ordered[: len(ordered) // 2]
    return {t: head.count(t) / len(head) for t in ("a", "b", "c")}
