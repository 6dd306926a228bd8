"""Dramatiq as a peer: the broker and actors ``dramatiq benchlib.peers.dramatiq_peer`` loads, and its driver.

Configuration (the fastest reasonable one found on the bench machine, a noisy 2-core VM; ``--option key=value``
of the harness overrides each entry of ``DEFAULTS``):

- ``RedisBroker`` on the private server, Dramatiq's default middleware (age limit, time limit, shutdown
  notifications, callbacks, pipelines, retries) and JSON encoder. The ``Results`` middleware with a
  ``RedisBackend`` is added for latency only (its actor has ``store_results=True``); drain runs without it.
- Workers: ``dramatiq benchlib.peers.dramatiq_peer --processes 2 --threads 32`` (one parent forking 2 worker
  processes). Dramatiq prefetches 2 x threads per process, and its drain rate follows: on 20,000 no-op tasks,
  8 threads (the default) ~4.2k/s, 16 ~7k/s, 32 ~7.5k/s (5.7-8.7k), 64 ~7.5k/s, 100 ~3.7k/s (acks lag behind).
- ``dramatiq_worker_timeout=100`` (ms, a documented environment variable; default 1000). An idle Redis consumer
  polls with a backoff from 5 ms up to that timeout, since the Redis broker has no blocking fetch. With the
  default, workers left idle for half a second were asleep for up to a second when the latency run began: the
  first ~200 tasks at 500/s waited up to ~400 ms (p95 ~170-340 ms); with 100 ms, p95 ~9 ms, drain unchanged.
- Drain is complete when the broker's message hash (``dramatiq:default.msgs``, its entry deleted on ack) is
  empty and the handlers counted every run (see ``benchlib.peers.harness``).

The module builds and sets its broker at import time from ``BENCH_PEER_URL``: the Dramatiq CLI imports it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from benchlib.peers import harness

DEFAULTS = {"threads": "32", "worker_timeout_ms": "100"}
MESSAGES = "dramatiq:default.msgs"

_url = os.environ.get(harness.URL_ENV)
_latency = harness.workload() == "latency"
broker = RedisBroker(url=_url)
backend = RedisBackend(url=_url) if _latency else None
if backend is not None:
    broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop")
def noop(payload: str) -> None:
    harness.record(time.time())


def _stamp(payload: str, submitted_at: float) -> list[float]:
    return [time.time(), os.getpid()]


# store_results is an option of the Results middleware: the actor can only be declared where it is installed.
stamp = dramatiq.actor(_stamp, actor_name="bench_stamp", store_results=True) if _latency else None


class Driver:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = {**DEFAULTS, **options}

    def config(self) -> dict[str, str]:
        threads = self.options["threads"]
        detail = (
            f"`dramatiq benchlib.peers.dramatiq_peer --processes {harness.PROCESSES} --threads {threads}` with "
            f"dramatiq_worker_timeout={self.options['worker_timeout_ms']} ms; RedisBroker, default middleware, "
            "JSON; prefetch 2 x threads (default); latency: Results middleware + RedisBackend, "
            "message.get_result(block=True)"
        )
        return {"label": f"{harness.PROCESSES} procs x {threads} threads", "detail": detail}

    def worker_argvs(self, python: str) -> list[list[str]]:
        argv = [python, "-m", "dramatiq", "benchlib.peers.dramatiq_peer", "--processes", str(harness.PROCESSES)]
        return [[*argv, "--threads", self.options["threads"]]]

    def worker_env(self) -> dict[str, str]:
        return {"dramatiq_worker_timeout": self.options["worker_timeout_ms"]}

    def enqueue_noops(self, n: int) -> None:
        for _ in range(n):
            noop.send(harness.PAYLOAD)

    def outstanding(self, client: redis.Redis) -> int:
        return int(client.hlen(MESSAGES))

    def submit(self, submitted_at: float) -> Message[Any]:
        assert stamp is not None
        return stamp.send(harness.PAYLOAD, submitted_at)

    def result(self, handle: Message[Any], timeout_s: float) -> list[float]:
        return list(handle.get_result(backend=backend, block=True, timeout=int(timeout_s * 1000)))

    def close(self) -> None:
        broker.close()
