"""The raw ceiling: the same lifecycle in plain redis-py with batching (pipelined XADD, XREADGROUP COUNT 100,
pipelined XACK+XDEL), no owner check, no result, no retries. ``python -m benchlib.raw consume ...`` is one
consumer process."""

from __future__ import annotations

import os
import sys
import time

import msgpack
import redis

from benchlib.common import PAYLOAD, WORKERS, wait_drained
from benchlib.env import Processes, RedisServer

GROUP = "g"
STREAM = "raw:stream"
STOP = "raw:stop"
FIRST = "raw:first"
READY = "raw:ready"
READ_COUNT = 100
CONSUMER_DEADLINE_S = 300.0


def fields() -> dict[bytes, bytes | int]:
    """A task entry as docs/wire-format.md lays it out (built with msgpack alone: this module imports nothing of
    the package, so that it measures the same loop whatever version of the package is installed)."""
    blob = msgpack.packb({"id": "0" * 26, "payload": PAYLOAD, "submitted_at": time.time()}, use_bin_type=True)
    return {b"v": b"1", b"task": blob, b"attempt": 1, b"reclaims": 0}


def _xadd_batched(client: redis.Redis, n: int, batch: int) -> None:
    entry = fields()
    for start in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(batch, n - start)):
            pipe.xadd(STREAM, entry)
        pipe.execute()


def submit(server: RedisServer, n: int) -> dict[str, float]:
    """XADD one at a time, and pipelined in batches of 100 and 1,000: tasks/s."""
    client = server.client()
    client.flushall()
    entry = fields()
    t0 = time.perf_counter()
    for _ in range(min(n, 5000)):
        client.xadd(STREAM, entry)
    single = min(n, 5000) / (time.perf_counter() - t0)
    out = {"single": single}
    for batch in (100, 1000):
        client.delete(STREAM)
        t0 = time.perf_counter()
        _xadd_batched(client, n, batch)
        out[f"batch{batch}"] = n / (time.perf_counter() - t0)
    client.close()
    return out


def consumers(server: RedisServer, procs: Processes, count: int = READ_COUNT) -> list[int]:
    """``WORKERS`` raw consumer processes reading up to ``count`` entries at a time; their PIDs."""
    argv = [sys.executable, "-m", "benchlib.raw", "consume", str(server.port)]
    return [procs.spawn([*argv, f"c{i}", str(count)]).pid for i in range(WORKERS)]


def wait_consumers_ready(client: redis.Redis, timeout_s: float = 20.0) -> None:
    """Until every consumer has connected; then a moment to reach its blocking read."""
    deadline = time.monotonic() + timeout_s
    while client.hlen(READY) < WORKERS:
        if time.monotonic() > deadline:
            raise TimeoutError("bench: raw consumers not ready")
        time.sleep(0.01)
    time.sleep(0.2)


def drain(server: RedisServer, procs: Processes, n: int, timeout_s: float) -> float:
    """``n`` queued entries, then 2 consumer processes: tasks/s from first read to stream empty."""
    client = server.client()
    client.flushall()
    _xadd_batched(client, n, 1000)
    client.xgroup_create(STREAM, GROUP, "0")
    consumers(server, procs)
    end = wait_drained(client, STREAM, timeout_s)
    first = min(float(v) for v in client.hvals(FIRST))
    client.set(STOP, 1)
    procs.stop_all()
    client.close()
    return n / (end - first)


def end_to_end(server: RedisServer, procs: Processes, n: int, batch: int, timeout_s: float) -> float:
    """Consumers waiting, one producer XADDing in pipelined batches: tasks/s until the stream is empty."""
    client = server.client()
    client.flushall()
    client.xgroup_create(STREAM, GROUP, "$", mkstream=True)
    consumers(server, procs)
    wait_consumers_ready(client)
    t0 = time.time()
    _xadd_batched(client, n, batch)
    end = wait_drained(client, STREAM, timeout_s)
    client.set(STOP, 1)
    procs.stop_all()
    client.close()
    return n / (end - t0)


def consume(port: int, name: str, count: int = READ_COUNT) -> None:
    """Read up to ``count`` entries, pipeline XACK + XDEL, until the stop key exists and the stream is empty."""
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + CONSUMER_DEADLINE_S
    seen_first = False
    client.hset(READY, name, 1)  # a blocked XREADGROUP does not create the consumer on 7.0: say it here
    while time.monotonic() < deadline:
        reply = client.xreadgroup(GROUP, name, {STREAM: ">"}, count=count, block=100)
        if not reply:
            if client.exists(STOP):
                break
            continue
        if not seen_first:
            client.hsetnx(FIRST, name, repr(time.time()))
            seen_first = True
        ids = [entry_id for entry_id, _fields in reply[0][1]]
        pipe = client.pipeline(transaction=False)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.execute()
    client.close()


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "consume":
        consume(int(sys.argv[2]), sys.argv[3], *(int(a) for a in sys.argv[4:]))
        os._exit(0)
    raise SystemExit("usage: python -m benchlib.raw consume PORT NAME [COUNT]")
