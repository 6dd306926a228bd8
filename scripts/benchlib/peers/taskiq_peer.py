"""taskiq as a peer: the broker and tasks ``taskiq worker benchlib.peers.taskiq_peer:broker`` loads, and its
driver.

Configuration (the fastest reasonable one found on the bench machine, a noisy 2-core VM; ``--option key=value``
of the harness overrides each entry of ``DEFAULTS``):

- taskiq-redis's ``RedisStreamBroker`` (XADD, XREADGROUP COUNT 100, XACK; after each read it also takes a lock
  and runs XAUTOCLAIM). The producer's ``startup()`` creates the consumer group (at ``$``) before any task is
  queued. taskiq's default JSON messages, argument parsing and acknowledgement (``when_saved``); ``--no-parse``
  measured the same within noise. ``RedisAsyncResultBackend`` for latency only; drain runs with taskiq's default
  no-op backend. Async handlers.
- Workers: ``taskiq worker benchlib.peers.taskiq_peer:broker --workers 2 --max-async-tasks 100`` (one parent
  supervising 2 worker processes; 100 is taskiq's default and our ``--concurrency 100``; 1,000 was the same
  within noise), log level WARNING.
- Results are awaited with ``task.wait_result(check_interval=0.001)``: taskiq polls the backend (its default
  interval is 200 ms).
- Drain is complete when the consumer group has no lag and no pending entries (``XINFO GROUPS``) and the handlers
  counted every run (see ``benchlib.peers.harness``). Acked entries stay in the stream: taskiq does not delete
  them and ``maxlen`` is off by default.

The module builds its broker at import time from ``BENCH_PEER_URL``: the taskiq CLI imports it. The driver runs
taskiq's async client on one event loop (``asyncio.Runner``), one ``run()`` per call.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis
from taskiq import AsyncTaskiqTask
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from benchlib.peers import harness

DEFAULTS = {"max_async_tasks": "100", "check_interval_s": "0.001"}
STREAM = "taskiq"
GROUP = "taskiq"

_url = os.environ.get(harness.URL_ENV, "")
broker = RedisStreamBroker(url=_url, queue_name=STREAM, consumer_group_name=GROUP)
if harness.workload() == "latency":
    broker = broker.with_result_backend(RedisAsyncResultBackend(redis_url=_url))


@broker.task(task_name="bench.noop")
async def noop(payload: str) -> None:
    harness.record(time.time())


@broker.task(task_name="bench.stamp")
async def stamp(payload: str, submitted_at: float) -> list[float]:
    return [time.time(), os.getpid()]


class Driver:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = {**DEFAULTS, **options}
        self.loop = asyncio.Runner()
        self.loop.run(broker.startup())

    def config(self) -> dict[str, str]:
        a = self.options["max_async_tasks"]
        detail = (
            f"`taskiq worker benchlib.peers.taskiq_peer:broker --workers {harness.PROCESSES} --max-async-tasks {a}`;"
            " RedisStreamBroker (XREADGROUP COUNT 100), ack when_saved (default), async handlers; latency: "
            f"RedisAsyncResultBackend, wait_result(check_interval={self.options['check_interval_s']})"
        )
        return {"label": f"{harness.PROCESSES} procs x {a} async", "detail": detail}

    def worker_argvs(self, python: str) -> list[list[str]]:
        argv = [python, "-m", "taskiq", "worker", "benchlib.peers.taskiq_peer:broker"]
        argv += ["--workers", str(harness.PROCESSES), "--max-async-tasks", self.options["max_async_tasks"]]
        return [[*argv, "--log-level", "WARNING"]]

    def worker_env(self) -> dict[str, str]:
        return {}

    def enqueue_noops(self, n: int) -> None:
        async def kick() -> None:
            for _ in range(n):
                await noop.kiq(harness.PAYLOAD)

        self.loop.run(kick())

    def outstanding(self, client: redis.Redis) -> int:
        for group in client.xinfo_groups(STREAM):
            if group["name"].decode() == GROUP:
                if group["lag"] is None:
                    raise RuntimeError("the consumer group's lag is unknown")
                return int(group["lag"]) + int(group["pending"])
        raise RuntimeError(f"no consumer group {GROUP} on {STREAM}")

    def submit(self, submitted_at: float) -> AsyncTaskiqTask[Any]:
        return self.loop.run(stamp.kiq(harness.PAYLOAD, submitted_at))

    def result(self, handle: AsyncTaskiqTask[Any], timeout_s: float) -> list[float]:
        interval = float(self.options["check_interval_s"])
        result = self.loop.run(handle.wait_result(check_interval=interval, timeout=timeout_s))
        if result.is_err:
            raise RuntimeError(f"taskiq task failed: {result.error}")
        return list(result.return_value)

    def close(self) -> None:
        self.loop.run(broker.shutdown())
        self.loop.close()
