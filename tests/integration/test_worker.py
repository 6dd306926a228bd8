"""The worker's dispatch path against a real redis-server and real ``python -m workers`` processes.

Covers: many tasks over two workers with an exact keyspace check, pull balancing by capacity, a busy worker
holding no unstarted tasks, sync handlers in threads beside async ones, result() woken by the settlement, groups
created at id 0, settings flags, the Redis version check and the maxmemory-policy warning.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import RedisServer, WorkerRunner
from helpers import keyspace, wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, Task, UnsupportedRedis
from dispatcher.store import codec, streams
from dispatcher.store.keys import GROUP, CapabilityKeys, KeySpace

MAX_BYTES = 4 << 20


def start(run_worker: Any, client: redis.Redis, prefix: str, name: str, *args: str, app: str | None = None) -> Any:
    """Start a worker named ``name`` and return once it has registered (its groups exist by then)."""
    proc = run_worker("--name", name, *args, app=app)
    wait_until(
        lambda: client.hexists(f"{prefix}:workers", name) or proc.poll() is not None,
        timeout_s=15,
        message=f"worker {name} to register",
    )
    assert proc.poll() is None, worker_log(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a worker we started and require a clean exit."""
    os.kill(proc.pid, signal.SIGTERM)
    assert wait_exit(proc, timeout_s=15) == 0, worker_log(proc)


def outcome(client: redis.Redis, keys: CapabilityKeys, task_id: str) -> codec.Outcome:
    """The decoded result record of a settled task."""
    raw = client.get(keys.result(task_id))
    assert isinstance(raw, bytes), f"no result for {task_id}"
    return codec.decode_outcome(raw, MAX_BYTES)


def pending_of(client: redis.Redis, stream: str, consumer: str) -> int:
    return len(client.xpending_range(stream, GROUP, "-", "+", 1000, consumername=consumer))


def lag(client: redis.Redis, stream: str) -> int:
    """Entries in the stream not yet delivered to any consumer (XINFO GROUPS lag)."""
    (group,) = client.xinfo_groups(stream)
    return int(group["lag"])


# ---- volume and a clean keyspace ---------------------------------------------------------------------------------


def test_thousand_tasks_on_two_workers_are_all_correct_and_leave_a_clean_keyspace(
    run_worker: Any, client: redis.Redis, dispatcher: Dispatcher, prefix: str
) -> None:
    ks = KeySpace(prefix)
    keys = ks.capability("basic.square")
    a = start(run_worker, client, prefix, "wa", "--capability", "basic.square", "--concurrency", "8", app="apps.basic")
    b = start(run_worker, client, prefix, "wb", "--capability", "basic.square", "--concurrency", "8", app="apps.basic")

    started = time.monotonic()
    handles = dispatcher.submit_many([Task(capability="basic.square", payload=i) for i in range(1000)])
    values = [h.result(timeout_s=60) for h in handles]
    print(f"\n1000 tasks on 2 workers: {time.monotonic() - started:.2f} s")
    assert values == [i * i for i in range(1000)]
    by_worker = Counter(outcome(client, keys, h.id).worker for h in handles)
    assert set(by_worker) == {"wa", "wb"}, by_worker
    print(f"tasks per worker: {dict(by_worker)}")

    # Everything settled: the work stream is empty (settled entries are XDELed), nothing is pending, and the
    # task index (task id -> entry id) is gone with its last field.
    assert client.xlen(keys.stream) == 0
    assert client.xpending(keys.stream, GROUP)["pending"] == 0
    assert lag(client, keys.stream) == 0
    assert not client.exists(keys.index)
    results = {keys.result(h.id) for h in handles}
    assert len(results) == 1000
    fleet_leases = {ks.promoter_lease, ks.admitter_lease, ks.reaper_lease}
    assert keyspace(client, prefix) == {
        *results,  # one result record per task (expires after result_ttl_s)
        ks.capabilities,  # the set of capabilities that stats and re-attach walk
        keys.stream,  # the work stream: empty, but it carries the consumer group
        keys.throughput,  # the last minute's completed/failed counts (expires 90 s after the last settle)
        ks.workers,  # the worker registry, one record per live worker
        keys.heartbeat("wa"),  # the live workers' heartbeats
        keys.heartbeat("wb"),
        *fleet_leases,  # the upkeep leases (mover, reaper) that one of the live workers holds
    }

    stop(a)
    stop(b)
    left = keyspace(client, prefix)
    # After a clean exit each worker has deleted its heartbeat and its registry record (the registry hash
    # goes with its last field). The leases are not released on exit: they may linger until their expiry.
    for lease in left & fleet_leases:
        assert 0 < client.pttl(lease) <= 10_000, lease
    assert left - fleet_leases == {
        *results,  # results outlive the workers until result_ttl_s: a producer may read them later
        ks.capabilities,  # capabilities are remembered for stats and re-attach
        keys.stream,  # the empty stream keeps the consumer group for the next worker
        keys.throughput,  # the throughput ring, until 90 s after the last settle
    }
    assert 0 < client.pttl(keys.throughput) <= 90_000
    for key in list(results)[:5]:
        assert 0 < client.pttl(key) <= 24 * 3600 * 1000


# ---- pull balancing ---------------------------------------------------------------------------------------------


def test_work_is_shared_in_proportion_to_concurrency(
    run_worker: Any, client: redis.Redis, dispatcher: Dispatcher, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("sleep")
    start(run_worker, client, prefix, "c4", "--capability", "sleep", "--concurrency", "4")
    start(run_worker, client, prefix, "c1", "--capability", "sleep", "--concurrency", "1")
    handles = dispatcher.submit_many([Task(capability="sleep", payload=0.1) for _ in range(50)])
    for h in handles:
        assert h.result(timeout_s=30) == 0.1
    by_worker = Counter(outcome(client, keys, h.id).worker for h in handles)
    print(f"\ntasks per worker (concurrency 4 vs 1): {dict(by_worker)}")
    assert by_worker["c4"] + by_worker["c1"] == 50
    assert by_worker["c1"] >= 1
    assert by_worker["c4"] > 2 * by_worker["c1"]


def test_a_busy_worker_holds_no_task_it_has_not_started(
    run_worker: Any, client: redis.Redis, dispatcher: Dispatcher, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("sleep")
    args = ("--capability", "sleep", "--block-ms", "100", "--grace-s", "0")
    start(run_worker, client, prefix, "slow", *args, "--concurrency", "1")
    dispatcher.submit_many([Task(capability="sleep", payload=60) for _ in range(10)])
    wait_until(lambda: pending_of(client, keys.stream, "slow") == 1, timeout_s=10, message="slow to take one task")

    # Observe for a while (many of the worker's 100 ms read cycles): it keeps exactly the one it runs.
    seen = set()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        seen.add((pending_of(client, keys.stream, "slow"), lag(client, keys.stream), client.xlen(keys.stream)))
        time.sleep(0.05)  # sampling pace, not synchronisation
    assert seen == {(1, 9, 10)}

    # The waiting nine were really free: a worker that comes later takes its share at once.
    start(run_worker, client, prefix, "late", *args, "--concurrency", "4")
    wait_until(lambda: pending_of(client, keys.stream, "late") == 4, timeout_s=10, message="late to take four")
    assert pending_of(client, keys.stream, "slow") == 1
    assert lag(client, keys.stream) == 5


# ---- handlers --------------------------------------------------------------------------------------------------


def test_sync_handlers_run_in_parallel_threads_and_async_handlers_on_the_loop(
    run_worker: Any, client: redis.Redis, dispatcher: Dispatcher, prefix: str
) -> None:
    caps = ("--capability", "basic.sync_sleep", "--capability", "basic.async_square")
    start(run_worker, client, prefix, "w", *caps, "--concurrency", "4", app="apps.basic")

    started = time.monotonic()
    sleeps = dispatcher.submit_many([Task(capability="basic.sync_sleep", payload=1.0) for _ in range(4)])
    squares = dispatcher.submit_many([Task(capability="basic.async_square", payload=i) for i in range(3)])
    slept = [h.result(timeout_s=30) for h in sleeps]
    print(f"\n4 sync sleeps of 1 s at concurrency 4: {time.monotonic() - started:.2f} s wall")

    threads = {r["thread"] for r in slept}
    assert len(threads) == 4 and all(t.startswith("handler") for t in threads), threads
    assert max(r["started"] for r in slept) < min(r["ended"] for r in slept)  # all four ran at the same time

    squared = [h.result(timeout_s=30) for h in squares]
    assert [r["value"] for r in squared] == [0, 1, 4]
    assert {r["thread"] for r in squared} == {"MainThread"}


def test_result_is_woken_by_the_workers_settlement(
    run_worker: Any, client: redis.Redis, dispatcher: Dispatcher, prefix: str, no_recheck: float
) -> None:
    keys = KeySpace(prefix).capability("sleep")
    start(run_worker, client, prefix, "w", "--capability", "sleep")
    gaps_ms = []
    for _ in range(5):
        handle = dispatcher.submit("sleep", 0.1)  # result() is waiting well before the task finishes
        # The periodic re-read is an hour away (no_recheck): a result within the timeout was announced.
        assert handle.result(timeout_s=30) == 0.1
        returned = time.time()
        gaps_ms.append((returned - outcome(client, keys, handle.id).finished_at) * 1000)
    # How fast is scripts/bench's to measure (latency: "result() after handler finished").
    print(f"\nresult() returned after finished_at by (ms): {', '.join(f'{g:.1f}' for g in gaps_ms)}")


# ---- groups, flags -----------------------------------------------------------------------------------------


def test_tasks_submitted_before_any_worker_existed_are_all_run(
    run_worker: Any, client: redis.Redis, dispatcher: Dispatcher, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("echo")
    handles = dispatcher.submit_many([Task(capability="echo", payload={"n": i}) for i in range(20)])
    assert client.xlen(keys.stream) == 20
    assert client.xinfo_groups(keys.stream) == []  # no worker yet, so no group
    proc = run_worker("--capability", "echo", "--burst")
    assert [h.result(timeout_s=30) for h in handles] == [{"n": i} for i in range(20)]
    assert wait_exit(proc) == 0, worker_log(proc)
    assert client.xlen(keys.stream) == 0


def test_settings_flags_reach_the_worker(run_worker: Any, client: redis.Redis, prefix: str) -> None:
    keys = KeySpace(prefix).capability("echo")
    start(run_worker, client, prefix, "hb", "--capability", "echo", "--heartbeat-ttl-s", "2")
    ttl_ms = client.pttl(keys.heartbeat("hb"))
    assert 0 < ttl_ms <= 2000


# ---- Redis version check (unit: Redis 7.0 is what runs here) ------------------------------------------------


def drive(op: Any, replies: list[Any]) -> Any:
    """Run a gateway op by hand: send it ``replies`` for its one batch of commands and return its value."""
    commands = next(op)
    assert [c[0] for c in commands] == ["INFO", "CONFIG"]
    with pytest.raises(StopIteration) as stopped:
        op.send(replies)
    return stopped.value.value


def test_server_check_refuses_redis_6() -> None:
    op = streams.server_check()
    next(op)
    with pytest.raises(UnsupportedRedis, match=r"6\.2\.0.*>= 7\.0"):
        op.send([{"redis_version": "6.2.0"}, [b"maxmemory-policy", b"noeviction"]])


@pytest.mark.parametrize(
    ("policy_reply", "expected"),
    [
        ([b"maxmemory-policy", b"noeviction"], ("7.0.15", "noeviction")),
        ({b"maxmemory-policy": b"allkeys-lru"}, ("7.0.15", "allkeys-lru")),
        (redis.ResponseError("NOPERM this user has no permissions to run the 'config' command"), ("7.0.15", "unknown")),
    ],
)
def test_server_check_accepts_redis_7_and_reads_the_policy(policy_reply: Any, expected: tuple[str, str]) -> None:
    assert drive(streams.server_check(), [{"redis_version": "7.0.15"}, policy_reply]) == expected


@pytest.mark.parametrize(("policy", "warns"), [("allkeys-lru", True), ("volatile-ttl", True), ("noeviction", False)])
def test_a_worker_warns_at_start_when_redis_may_evict(policy: str, warns: bool, prefix: str, tmp_path: Path) -> None:
    with RedisServer(extra_args=("--maxmemory-policy", policy)) as server:
        runner = WorkerRunner(server.url, prefix, tmp_path)
        try:
            proc = runner("--capability", "echo", "--burst")
            assert wait_exit(proc) == 0, worker_log(proc)  # burst: nothing queued, so it starts and stops at once
        finally:
            runner.stop_all()
    log = worker_log(proc)
    assert "worker started" in log, log  # it got past the start-up check either way
    warnings = [line for line in log.splitlines() if "maxmemory-policy" in line]
    if warns:
        assert len(warnings) == 1, log
        assert " WARNING " in warnings[0] and f"maxmemory-policy is {policy}, not noeviction" in warnings[0]
    else:
        assert warnings == [], log
