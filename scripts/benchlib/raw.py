"""The raw ceiling: the same lifecycle in plain redis-py with batching (pipelined XADD, XREADGROUP COUNT 100,
pipelined XACK+XDEL), no owner check, no result, no retries. ``python -m benchlib.raw consume ...`` is one
consumer process."""

from __future__ import annotations

import os
import sys
import time

import redis

from benchlib.common import PAYLOAD, WORKERS, wait_drained
from benchlib.env import Processes, RedisServer
from dispatcher import Task
from dispatcher.store import codec

GROUP = "g"
STREAM = "raw:stream"
STOP = "raw:stop"
FIRST = "raw:first"
READY = "raw:ready"
READ_COUNT = 100
CONSUMER_DEADLINE_S = 300.0


def _fields() -> dict[bytes, bytes | int]:
    blob = codec.encode_task(Task(capability="echo", payload=PAYLOAD), 1 << 20)
    return {b"v": codec.FORMAT_VERSION, b"task": blob, b"attempt": 1, b"reclaims": 0}


def _xadd_batched(client: redis.Redis, n: int, batch: int) -> None:
    fields = _fields()
    for start in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(batch, n - start)):
            pipe.xadd(STREAM, fields)
        pipe.execute()


def submit(server: RedisServer, n: int) -> dict[str, float]:
    """XADD one at a time, and pipelined in batches of 100 and 1,000: tasks/s."""
    client = server.client()
    client.flushall()
    fields = _fields()
    t0 = time.perf_counter()
    for _ in range(min(n, 5000)):
        client.xadd(STREAM, fields)
    single = min(n, 5000) / (time.perf_counter() - t0)
    out = {"single": single}
    for batch in (100, 1000):
        client.delete(STREAM)
        t0 = time.perf_counter()
        _xadd_batched(client, n, batch)
        out[f"batch{batch}"] = n / (time.perf_counter() - t0)
    client.close()
    return out


def _consumers(server: RedisServer, procs: Processes) -> list[int]:
    argv = [sys.executable, "-m", "benchlib.raw", "consume", str(server.port)]
    return [procs.spawn([*argv, f"c{i}"]).pid for i in range(WORKERS)]


def _wait_consumers_ready(client: redis.Redis, timeout_s: float = 20.0) -> None:
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
    _consumers(server, procs)
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
    _consumers(server, procs)
    _wait_consumers_ready(client)
    t0 = time.time()
    _xadd_batched(client, n, batch)
    end = wait_drained(client, STREAM, timeout_s)
    client.set(STOP, 1)
    procs.stop_all()
    client.close()
    return n / (end - t0)


def consume(port: int, name: str) -> None:
    """Read COUNT 100, pipeline XACK + XDEL, until the stop key exists and the stream is empty."""
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + CONSUMER_DEADLINE_S
    seen_first = False
    client.hset(READY, name, 1)  # a blocked XREADGROUP does not create the consumer on 7.0: say it here
    while time.monotonic() < deadline:
        reply = client.xreadgroup(GROUP, name, {STREAM: ">"}, count=READ_COUNT, block=100)
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
    if len(sys.argv) == 4 and sys.argv[1] == "consume":
        consume(int(sys.argv[2]), sys.argv[3])
        os._exit(0)
    raise SystemExit("usage: python -m benchlib.raw consume PORT NAME")
