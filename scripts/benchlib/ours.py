"""Our workloads: submit, drain, end to end, latency, memory; every figure from the public API and CLI."""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field
from typing import Any

from benchlib.common import (
    PAYLOAD,
    WORKERS,
    delete_results,
    keys_of,
    outcomes,
    pending,
    percentiles_ms,
    redis_cpu_s,
    used_memory,
    wait_drained,
    wait_ready,
)
from benchlib.env import Processes, RedisServer, cpu_s, status_kb
from benchlib.observer import observer_result, start_observer
from dispatcher import AsyncDispatcher, Dispatcher, Settings, Task


def _settings(server: RedisServer, prefix: str) -> Settings:
    return Settings.build(redis_url=server.url, prefix=prefix)


def submit_single(server: RedisServer, n: int) -> dict[str, float]:
    """``submit()`` one task at a time: tasks/s, µs of client CPU per task."""
    with Dispatcher(_settings(server, "b-single")) as d:
        d.submit("echo", PAYLOAD)  # warm: registers the capability, loads the script, connects
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            d.submit("echo", PAYLOAD)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"rate": n / wall, "us_per_task": wall / n * 1e6, "cpu_us_per_task": cpu / n * 1e6}


def submit_many(server: RedisServer, n: int, batch: int) -> dict[str, float]:
    """``submit_many()`` in batches of ``batch`` (building each ``Task`` counts): tasks/s, µs CPU/task."""
    with Dispatcher(_settings(server, f"b-many{batch}")) as d:
        d.submit_many([Task(capability="echo", payload=PAYLOAD)])
        cpu0, t0 = time.process_time(), time.perf_counter()
        for start in range(0, n, batch):
            d.submit_many([Task(capability="echo", payload=PAYLOAD) for _ in range(min(batch, n - start))])
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"rate": n / wall, "cpu_us_per_task": cpu / n * 1e6}


def ping_rtt_us(server: RedisServer, n: int = 2000) -> float:
    client = server.client()
    client.ping()
    t0 = time.perf_counter()
    for _ in range(n):
        client.ping()
    client.close()
    return (time.perf_counter() - t0) / n * 1e6


def queue(server: RedisServer, prefix: str, capability: str, n: int) -> list[str]:
    with Dispatcher(_settings(server, prefix)) as d:
        ids: list[str] = []
        for start in range(0, n, 1000):
            handles = d.submit_many([Task(capability=capability, payload=PAYLOAD) for _ in range(min(1000, n - start))])
            ids.extend(h.id for h in handles)
    return ids


@dataclass(slots=True)
class DrainResult:
    rate: float
    rate_with_startup: float
    seconds: float
    rss_hwm_kb: list[int]
    redis_cpu_us_per_task: float
    memory: dict[str, Any] = field(default_factory=dict)


def drain(
    server: RedisServer, procs: Processes, n: int, capability: str, worker_args: list[str], timeout_s: float
) -> DrainResult:
    """``n`` queued tasks, then 2 worker processes: tasks/s from the first task's start to the last result."""
    prefix = "b-drain"
    client = server.client()
    client.flushall()
    mem0 = used_memory(client)
    ids = queue(server, prefix, capability, n)
    mem_queued = used_memory(client)
    keys = keys_of(prefix, capability)
    spawned, redis_cpu0 = time.time(), redis_cpu_s(client)
    workers = procs.workers(WORKERS, server.url, prefix, ["-c", capability, *worker_args])
    end = wait_drained(client, keys.stream, timeout_s)
    redis_us = (redis_cpu_s(client) - redis_cpu0) / n * 1e6
    hwm = [status_kb(p.pid, "VmHWM") or 0 for p in workers]
    mem_drained = used_memory(client)
    left = {"stream_length": client.xlen(keys.stream), "pending": pending(client, keys.stream)}
    records = outcomes(client, keys, ids)
    first = min(r.finished_at for r in records)  # a no-op's start and finish are microseconds apart
    delete_results(client, keys, ids)
    mem_no_results = used_memory(client)
    procs.stop_all()
    client.close()
    memory = {
        "bytes_per_queued_task": (mem_queued - mem0) / n,
        "after_drain_delta_bytes": mem_drained - mem0,
        "results_bytes_per_task": (mem_drained - mem_no_results) / n,
        "after_drain_without_results_delta_bytes": mem_no_results - mem0,
        **left,
    }
    return DrainResult(n / (end - first), n / (end - spawned), end - first, hwm, redis_us, memory)


def end_to_end(server: RedisServer, procs: Processes, n: int, batch: int, timeout_s: float) -> dict[str, Any]:
    """Idle workers, then one producer submitting ``n`` tasks in batches: tasks/s from first submit to last
    result stored. Also the workers' idle RSS and their peak RSS under this load."""
    prefix = "b-e2e"
    client = server.client()
    client.flushall()
    keys = keys_of(prefix, "echo")
    workers = procs.workers(WORKERS, server.url, prefix, ["-c", "echo"])
    wait_ready(client, prefix, WORKERS)
    time.sleep(0.5)
    idle = [status_kb(p.pid, "VmRSS") or 0 for p in workers]
    with Dispatcher(_settings(server, prefix)) as d:
        d.submit_many([Task(capability="echo", payload=PAYLOAD)])
        wait_drained(client, keys.stream, timeout_s)
        cpu0, redis_cpu0 = sum(cpu_s(p.pid) for p in workers), redis_cpu_s(client)
        t0 = time.time()
        for start in range(0, n, batch):
            d.submit_many([Task(capability="echo", payload=PAYLOAD) for _ in range(min(batch, n - start))])
        submitted = time.time()
        end = wait_drained(client, keys.stream, timeout_s)
    worker_us = (sum(cpu_s(p.pid) for p in workers) - cpu0) / n * 1e6
    redis_us = (redis_cpu_s(client) - redis_cpu0) / n * 1e6
    hwm = [status_kb(p.pid, "VmHWM") or 0 for p in workers]
    procs.stop_all()
    client.close()
    return {
        "rate": n / (end - t0),
        "submit_rate": n / (submitted - t0),
        "idle_rss_kb": idle,
        "rss_hwm_kb": hwm,
        "worker_cpu_us_per_task": worker_us,
        "redis_cpu_us_per_task": redis_us,
    }


async def _latency(
    url: str, prefix: str, capability: str, n: int, rate_per_s: float, wait: bool
) -> list[dict[str, Any]]:
    """Submit ``n`` tasks at a fixed rate; with ``wait``, each is awaited with ``result()`` on the same loop."""
    samples: list[dict[str, Any]] = []

    async def waiter(handle: Any, sample: dict[str, Any]) -> None:
        sample["called"] = time.time()
        await handle.result(timeout_s=10)
        sample["returned"] = time.time()

    async with AsyncDispatcher(Settings.build(redis_url=url, prefix=prefix)) as d:
        await (await d.submit(capability, None)).result(timeout_s=10)  # warm: connects, loads the script
        waiters = []
        t0 = time.monotonic()
        for i in range(n):
            delay = t0 + i / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = Task(capability=capability, payload=PAYLOAD)
            handle = await d.submit(task)
            sample = {"id": handle.id, "submitted_at": task.submitted_at, "returned_submit": time.time()}
            samples.append(sample)
            if wait:
                waiters.append(asyncio.create_task(waiter(handle, sample)))
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=30)
    return samples


def latency(
    server: RedisServer, procs: Processes, n: int, rate_per_s: float, capability: str = "bench.stamp"
) -> dict[str, Any]:
    """Idle workers; ``n`` tasks submitted at a fixed rate (submit→start, submit→result stored), then
    ``n`` more, each awaited with ``result()`` (the waiters share the loop). ``result()``'s lag is timed
    from the moment an idle observer process heard the task's announcement, i.e. from when the result was
    stored, or from the ``result()`` call when that came later (the waiter task starts when the submitting loop
    next yields); the lag from the handler's finish time (which also holds the worker's settle round trip) is
    kept beside it."""
    prefix = "b-lat"
    client = server.client()
    client.flushall()
    workers = procs.workers(WORKERS, server.url, prefix, ["-c", capability, "--app", "benchlib.handlers"])
    wait_ready(client, prefix, WORKERS)
    time.sleep(0.5)
    idle = [status_kb(p.pid, "VmRSS") or 0 for p in workers]
    keys = keys_of(prefix, capability)
    # The bench process carries every earlier workload's heap: a full collection of it took ~28 ms mid-run and
    # stalled the submitting loop (measured with gc.callbacks). Freeze what exists, as a latency-minded service
    # would after start-up, so only the objects of this workload are collected.
    gc.collect()
    gc.freeze()
    plain = asyncio.run(_latency(server.url, prefix, capability, n, rate_per_s, wait=False))
    time.sleep(0.2)
    records = outcomes(client, keys, [str(s["id"]) for s in plain])
    observer = start_observer(procs, server.url, keys.channel("*"), n + 1, 60.0)  # + the warm-up task
    waited = asyncio.run(_latency(server.url, prefix, capability, n, rate_per_s, wait=True))
    heard = observer_result(observer, 30.0)
    gc.unfreeze()
    waited_records = outcomes(client, keys, [str(s["id"]) for s in waited])
    procs.stop_all()
    client.close()
    pairs = list(zip(plain, records, strict=True))
    wpairs = list(zip(waited, waited_records, strict=True))
    # From when the result was stored, or from the call when it was stored before result() was even called.
    lags = [s["returned"] - max(heard[keys.channel(str(s["id"]))], s["called"]) for s in waited]
    return {
        "submit_to_start": percentiles_ms([r.value - s["submitted_at"] for s, r in pairs]),
        "submit_call": percentiles_ms([s["returned_submit"] - s["submitted_at"] for s, r in pairs]),
        "submit_to_result_stored": percentiles_ms([r.finished_at - s["submitted_at"] for s, r in pairs]),
        "submit_to_result_returned": percentiles_ms([s["returned"] - s["submitted_at"] for s, r in wpairs]),
        "result_returns_after_stored": percentiles_ms(lags),
        "result_returns_after_handler_finished": percentiles_ms([s["returned"] - r.finished_at for s, r in wpairs]),
        "idle_rss_kb": idle,
    }
