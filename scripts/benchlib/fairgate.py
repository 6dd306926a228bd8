"""Fairness workloads of the fair gate (issue 14), run by ``scripts/bench --flow`` and ``--fair-gate``:

- *sybil*: tenant A floods the capability, tenant B submits a few tasks while A's backlog drains. Three variants:
  A's tasks on as few keys as B's, A spreading them over many concurrency keys, and the same spread with caps
  alone (no ``fairness_key``): B's share of the starts while it waits and its submit-to-start wait, to show that
  spreading over keys gains A nothing under fairness (and what caps alone give B).
- *small behind a flood*: a 10-task tenant submitted, round after round, behind a tenant of 100,000 waiting
  tasks: its tasks' submit-to-start wait (p99) and how many of the flood's tasks started between its submit and
  each of its starts, against the bound of the design: what was on the stream unread at its submit (the window,
  64) or read by a worker and not started yet (at most the workers' slots, 200), plus one turn of the flood per
  turn of the small tenant (10) and as many again for ties of equal virtual times: 64 + 200 + 2 x 10.

Handlers: ``bench.stamp`` (returns its start time), 2 workers of 100 slots, the default window (64).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

import redis

from benchlib import flow
from benchlib.common import WORKERS, keys_of, outcomes, percentiles_ms, wait_ready
from benchlib.env import Processes, RedisServer
from benchlib.report import Row
from dispatcher import Dispatcher, Settings, Task
from dispatcher.fleet import ratelimits

CAPABILITY = "bench.stamp"
CONCURRENCY = 100
SYBIL_CAP = 4
SYBIL_KEYS = 50
"""B's keys (and A's when it does not spread): 50 keys of cap 4 allow 200 on the stream or running, the 2
workers' slots: the cap binds little, so fairness decides B's share."""
ROUNDS = 5
SMALL = 10


def _queue(d: Dispatcher, tasks: list[Task]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(tasks), 1000):
        ids.extend(h.id for h in d.submit_many(tasks[start : start + 1000]))
    return ids


def _settle_wait(client: redis.Redis, index: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while client.hlen(index):
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {index} not drained within {timeout_s} s")
        time.sleep(0.01)


def _start_workers(server: RedisServer, procs: Processes, client: redis.Redis, prefix: str) -> None:
    """``WORKERS`` workers of the bench capability on ``prefix``, returned once all are ready."""
    args = ["-c", CAPABILITY, "--app", "benchlib.handlers", "--concurrency", str(CONCURRENCY)]
    procs.workers(WORKERS, server.url, prefix, args)
    wait_ready(client, prefix, WORKERS)


def _task(tenant: str, key: str, fair: bool, i: int) -> Task:
    return Task(capability=CAPABILITY, payload=i, fairness_key=tenant if fair else None, concurrency_key=key)


def sybil(server: RedisServer, procs: Processes, flood: int, small: int, timeout_s: float) -> dict[str, Any]:
    """B's share of the starts while it waits, its waits, and A's starts meanwhile (against the bound: one turn
    of A per turn of B, plus the window already on the stream and what the workers read but did not start yet,
    at most their slots) in each variant: A on as many keys
    as B (50), A spread over ``flood / 2`` keys, and that spread with caps alone (no ``fairness_key``)."""
    spread = max(flood // 2, SYBIL_KEYS)
    variants = [(f"fair, A on {SYBIL_KEYS} keys", SYBIL_KEYS, True), (f"fair, A on {spread:,} keys", spread, True)]
    variants.append((f"caps alone, A on {spread:,} keys", spread, False))
    return {name: _sybil_run(server, procs, flood, small, keys, fair, timeout_s) for name, keys, fair in variants}


def _sybil_run(
    server: RedisServer, procs: Processes, flood: int, small: int, a_keys: int, fair: bool, timeout_s: float
) -> dict[str, Any]:
    prefix = "b-sybil"
    client = server.client()
    client.flushall()
    keys = keys_of(prefix, CAPABILITY)
    with Dispatcher(Settings.build(redis_url=server.url, prefix=prefix)) as d:
        ratelimits.set_concurrency(d.gateway, d.core.keyspace, CAPABILITY, SYBIL_CAP)
        a_ids = _queue(d, [_task("A", f"a{i % a_keys}", fair, i) for i in range(flood)])
        _start_workers(server, procs, client, prefix)
        deadline = time.monotonic() + timeout_s
        while client.hlen(keys.index) > flood * 0.9 and time.monotonic() < deadline:
            time.sleep(0.005)  # A's flood is draining
        b_tasks = [_task("B", f"b{i % SYBIL_KEYS}", fair, i) for i in range(small)]
        b_ids = _queue(d, b_tasks)
        landed = time.time()  # every B task is in Redis: A's starts from here on are starts while B waits
        submitted = {t.id: t.submitted_at for t in b_tasks}
        _settle_wait(client, keys.index, timeout_s)
    a_starts = sorted(float(r.value) for r in outcomes(client, keys, a_ids))
    b_starts = dict(zip(b_ids, (float(r.value) for r in outcomes(client, keys, b_ids)), strict=True))
    procs.stop_all()
    client.close()
    last = max(b_starts.values())
    a_during = sum(1 for s in a_starts if landed <= s <= last)
    waits = [b_starts[i] - submitted[i] for i in b_ids]
    return {
        "b_share": small / (small + a_during),
        "b_wait": percentiles_ms(waits),
        "a_started_meanwhile": a_during,
        "a_bound": small + Settings.build().flow_window + WORKERS * CONCURRENCY,
    }


def small_behind_flood(server: RedisServer, procs: Processes, flood: int, timeout_s: float) -> dict[str, Any]:
    """``ROUNDS`` rounds of ``SMALL`` tasks of tenant "small" behind ``flood`` tasks of tenant "flood": the small
    tasks' waits, and the flood's starts between a small task's submit and its start, against the bound."""
    prefix = "b-small"
    client = server.client()
    client.flushall()
    keys = keys_of(prefix, CAPABILITY)
    window = Settings.build().flow_window
    with Dispatcher(Settings.build(redis_url=server.url, prefix=prefix)) as d:
        flood_ids = _queue(d, [Task(capability=CAPABILITY, payload=i, fairness_key="flood") for i in range(flood)])
        _start_workers(server, procs, client, prefix)
        small: list[tuple[str, float, float]] = []
        for _ in range(ROUNDS):
            deadline = time.monotonic() + timeout_s
            while client.hlen(keys.index) > flood - 1000 and time.monotonic() < deadline:
                time.sleep(0.005)  # the flood is draining (and more than 1,000 of it still wait)
            tasks = [Task(capability=CAPABILITY, payload=i, fairness_key="small") for i in range(SMALL)]
            handles = d.submit_many(tasks)
            landed = time.time()  # in Redis: the flood's starts from here on went ahead of it
            for h in handles:
                h.result(timeout_s=timeout_s)
            small += [(t.id, t.submitted_at, landed) for t in tasks]
        left_when_done = client.hlen(keys.index)
        _settle_wait(client, keys.index, timeout_s)
    flood_starts = sorted(float(r.value) for r in outcomes(client, keys, flood_ids))
    small_starts = [float(r.value) for r in outcomes(client, keys, [i for i, _, _ in small])]
    procs.stop_all()
    client.close()
    ahead = sorted(
        max(bisect.bisect_left(flood_starts, start) - bisect.bisect_right(flood_starts, landed), 0)
        for (_, _, landed), start in zip(small, small_starts, strict=True)
    )
    return {
        "wait": percentiles_ms([s - t for (_, t, _), s in zip(small, small_starts, strict=True)]),
        "ahead_p99": ahead[min(len(ahead) - 1, round(0.99 * (len(ahead) - 1)))],
        "ahead_max": ahead[-1],
        "bound": window + WORKERS * CONCURRENCY + 2 * SMALL,
        "flood_left_when_done": left_when_done,
    }


def rows(n: int, full: bool, timeout_s: float, log: Callable[[str], None]) -> list[Row]:
    """Plain and all-four-options drains of ``n`` tasks, alternating, twice (the run-to-run noise shows in the
    pairs); the sybil flood of ``n`` tasks; a 10-task tenant behind a flood of 100,000 (5,000 with --quick)."""
    server, procs = RedisServer().start(), Processes()
    rows: list[Row] = []
    try:
        for run in (1, 2):
            for kind in ("plain", "all"):
                log(f"fair gate: drain {n:,} {kind} tasks, 2 workers (run {run} of 2)")
                d = flow.drain(server, procs, n, timeout_s, kind)
                what = "no option" if kind == "plain" else "all four options"
                rows += [
                    Row(
                        "fairgate",
                        f"drain, {what}, run {run}",
                        d["rate"],
                        "tasks/s",
                        None,
                        "≥ 10,000" if kind == "all" else "",
                        None,
                        d,
                    ),
                    Row("fairgate", f"Redis commands per task, {what}: submit", d["submit_commands_per_task"], ""),
                    Row(
                        "fairgate",
                        f"Redis commands per task, {what}: admit + run + settle",
                        d["run_commands_per_task"],
                        "",
                    ),
                ]
        log(f"fair gate: sybil, A floods {n:,}, B submits 200")
        for name, r in sybil(server, procs, n, 200, timeout_s).items():
            rows += [
                Row("fairgate", f"sybil, {name}: B's share while it waits", r["b_share"], "", None, "", None, r),
                Row("fairgate", f"sybil, {name}: B's wait, p99", r["b_wait"]["p99"], "ms"),
                Row(
                    "fairgate",
                    f"sybil, {name}: A's starts while B waits",
                    r["a_started_meanwhile"],
                    "tasks",
                    None,
                    f"≤ {r['a_bound']} (fair)",
                ),
            ]
        flood = 100_000 if full else 5_000
        log(f"fair gate: {ROUNDS} x {SMALL} tasks of a tenant behind {flood:,} of another")
        r = small_behind_flood(server, procs, flood, timeout_s)
        rows += [
            Row("fairgate", f"10-task tenant behind {flood:,}: wait, p99", r["wait"]["p99"], "ms", None, "", None, r),
            Row(
                "fairgate",
                f"10-task tenant behind {flood:,}: flood starts ahead, max",
                r["ahead_max"],
                "tasks",
                None,
                f"≤ {r['bound']}",
                r["ahead_max"] <= r["bound"],
            ),
        ]
    finally:
        procs.stop_all()
        server.stop()
    return rows
