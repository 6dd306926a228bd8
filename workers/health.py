"""What a worker's ``/livez`` and ``/readyz`` say (``dispatcher.observe.http`` serves them on its metrics port).

Liveness is the process and its event loop: it never depends on Redis, so that a Redis outage does not get every
worker restarted at once. Readiness is the worker doing its work: it reads from Redis, its heartbeat is fresh and
it is not shutting down. Each check returns None when healthy, else a one-line reason.
"""

from __future__ import annotations

import time

from workers.runtime import Worker


def liveness(worker: Worker) -> str | None:
    """None while the worker's event loop answers; a reason once it has not run its tick for half a heartbeat TTL
    (the threshold at which the heartbeat's watchdog stops beating)."""
    quiet_s = worker.loop_quiet_s()
    stall_s = worker.settings.heartbeat_ttl_s / 2
    if quiet_s > stall_s:
        return f"event loop blocked for {quiet_s:.1f} s (more than {stall_s:g} s)"
    return None


def readiness(worker: Worker) -> str | None:
    """None while the worker reads from Redis with a fresh heartbeat and is not stopping; else why not."""
    if worker.stopping:
        return f"shutting down{f': {worker.failure}' if worker.failure else ''}"
    heartbeat = worker.heartbeat
    if heartbeat is None or heartbeat.last_beat_s is None:
        return "starting: not registered with Redis yet"
    if worker.reader.failures:
        return f"Redis unavailable: reads fail ({worker.reader.last_error})"
    ttl_s = worker.settings.heartbeat_ttl_s
    age_s = time.monotonic() - heartbeat.last_beat_s
    if heartbeat.failures:
        return f"Redis unavailable: the heartbeat fails (last beat {age_s:.1f} s ago)"
    if age_s > ttl_s:
        return f"heartbeat stale: last beat {age_s:.1f} s ago (ttl {ttl_s:g} s)"
    return None
