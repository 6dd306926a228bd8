"""Flow-control workloads (issue 14): tasks with a priority drained by 2 workers, and a priority-9 task submitted
behind a backlog of priority-0 tasks. Run them alone with ``scripts/bench --flow``.

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

JUMPS = 20
"""Priority-9 tasks submitted, one at a time, while the backlog drains."""


def _commands(client: redis.Redis) -> int:
    return sum(int(v["calls"]) for k, v in client.info("commandstats").items() if k != "cmdstat_info")


def _wait_drained(client: redis.Redis, prefix: str, capability: str, timeout_s: float) -> float:
    """Until the ready set and the stream are empty (every task was submitted before: all settled)."""
    keys = keys_of(prefix, capability)
    deadline = time.monotonic() + timeout_s
    while client.zcard(keys.ready) or client.xlen(keys.stream):
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {capability} not drained within {timeout_s} s")
        time.sleep(0.005)
    return time.time()


def drain(server: RedisServer, procs: Processes, n: int, timeout_s: float) -> dict[str, Any]:
    """``n`` tasks with priorities 0-9 queued, then 2 workers: tasks/s, Redis commands per task."""
    prefix, capability = "b-flow-drain", "echo"
    client = server.client()
    client.flushall()
    settings = Settings.build(redis_url=server.url, prefix=prefix)
    cmd0 = _commands(client)
    with Dispatcher(settings) as d:
        ids: list[str] = []
        for start in range(0, n, 1000):
            batch = [Task(capability=capability, payload=PAYLOAD, priority=i % 10) for i in range(start, start + 1000)]
            ids.extend(h.id for h in d.submit_many(batch[: n - start]))
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
