"""Celery as a peer: the app and tasks ``celery -A benchlib.peers.celery_peer worker`` loads, and its driver.

Configuration (the fastest reasonable one found on the bench machine, a noisy 2-core VM; ``--option key=value``
of the harness overrides each entry of ``DEFAULTS``):

- Broker: Redis through kombu (list ``celery``, prefetched messages in the ``unacked`` hash), JSON (the
  default; msgpack measured the same within noise). Drain: the no-op task has ``ignore_result=True`` and the app
  no result backend. Latency: Redis result backend on the same server, ``AsyncResult.get()``.
- Workers: two ``celery worker --pool solo`` processes, each consuming and running tasks itself: that is "2 worker
  processes" as the other peers and ours count them. Measured on 20,000 no-op tasks: solo ~2.2-2.8k/s, threads
  pool ``-c 8`` ~1.9k/s, prefork (2 x ``-c 1`` or 1 x ``-c 2``: a parent feeding children through pipes)
  ~1.4k/s.
- ``worker_prefetch_multiplier`` 4 (Celery's default; 16, 64 and 256 were the same within noise),
  ``task_acks_late`` off (the default: the message is acked as the task starts), ``worker_disable_rate_limits``,
  ``--without-heartbeat --without-gossip --without-mingle``, log level WARNING.
- Drain is complete when the ``celery`` list and the ``unacked`` hash are both empty and the handlers counted
  every run (see ``benchlib.peers.harness``).

The module builds its app at import time from ``BENCH_PEER_URL``: the Celery CLI imports it to find ``app``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult

from benchlib.peers import harness

DEFAULTS = {"pool": "solo", "procs": "2", "concurrency": "1", "prefetch": "4", "serializer": "json"}
QUEUE = "celery"
UNACKED = "unacked"

_options = {**DEFAULTS, **harness.options()}
_latency = harness.workload() == "latency"
app = Celery(
    "bench", broker=os.environ.get(harness.URL_ENV), backend=os.environ.get(harness.URL_ENV) if _latency else None
)
app.conf.update(
    worker_prefetch_multiplier=int(_options["prefetch"]),
    task_acks_late=False,
    worker_disable_rate_limits=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    task_default_queue=QUEUE,
    task_serializer=_options["serializer"],
    result_serializer=_options["serializer"],
    accept_content=[_options["serializer"]],
)


@app.task(name="bench.noop", ignore_result=True)
def noop(payload: str) -> None:
    harness.record(time.time())


@app.task(name="bench.stamp")
def stamp(payload: str, submitted_at: float) -> list[float]:
    return [time.time(), os.getpid()]


class Driver:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = {**DEFAULTS, **options}

    def config(self) -> dict[str, str]:
        o = self.options
        procs, pool, c = int(o["procs"]), o["pool"], int(o["concurrency"])
        label = f"{procs} x celery worker --pool {pool}" + ("" if pool == "solo" else f" -c {c}")
        detail = (
            f"{procs} `celery worker --pool {pool} -c {c} --without-heartbeat --without-gossip --without-mingle` "
            f"processes; worker_prefetch_multiplier={o['prefetch']}, task_acks_late=False, "
            "worker_disable_rate_limits=True; Redis broker (kombu), JSON; drain: ignore_result=True, no result "
            "backend; latency: Redis result backend, AsyncResult.get()"
        )
        return {"label": label, "detail": detail}

    def worker_argvs(self, python: str) -> list[list[str]]:
        o = self.options
        argv = [python, "-m", "celery", "-A", "benchlib.peers.celery_peer", "worker", "--pool", o["pool"]]
        argv += ["--concurrency", o["concurrency"], "--loglevel", "WARNING"]
        argv += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
        return [[*argv, "--hostname", f"bench{i}@%h"] for i in range(int(o["procs"]))]

    def worker_env(self) -> dict[str, str]:
        return {}

    def enqueue_noops(self, n: int) -> None:
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                noop.apply_async((harness.PAYLOAD,), producer=producer)

    def outstanding(self, client: redis.Redis) -> int:
        pipe = client.pipeline(transaction=False)
        pipe.llen(QUEUE)
        pipe.hlen(UNACKED)
        waiting, unacked = pipe.execute()
        return int(waiting) + int(unacked)

    def submit(self, submitted_at: float) -> AsyncResult:
        return stamp.apply_async((harness.PAYLOAD, submitted_at))

    def result(self, handle: AsyncResult, timeout_s: float) -> list[float]:
        return list(handle.get(timeout=timeout_s))

    def close(self) -> None:
        app.close()
