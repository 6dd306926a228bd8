"""Time ``stats.collect()`` on a fleet of 100 capabilities x 10 consumers (1,000 heartbeat keys).

Starts a private redis-server on a free loopback port (never touches a shared one), builds the state with
the producer and raw commands (tasks waiting and running, delayed, dead letters, registry, heartbeats), then
prints the best and median of a bounded number of collections.

    .venv/bin/python scripts/bench_stats.py [--capabilities 100] [--consumers 10] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

import redis

from dispatcher import Dispatcher, KeySpace, Settings, Task
from dispatcher.codec import WorkerRecord, encode_worker
from dispatcher.keys import GROUP
from dispatcher.stats import collect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(client: redis.Redis, settings: Settings, capabilities: int, consumers: int) -> None:
    ks = KeySpace(settings.prefix)
    names = [f"cap-{i:03d}" for i in range(capabilities)]
    with Dispatcher(settings, client=client) as d:
        d.submit_many(Task(capability=n, payload=i) for n in names for i in range(20))
        d.submit_many(Task(capability=n, payload=0, not_before=time.time() + 3600) for n in names)
    pipe = client.pipeline(transaction=False)
    for n in names:
        keys = ks.capability(n)
        pipe.xgroup_create(keys.stream, GROUP, "0", mkstream=True)
        pipe.xreadgroup(GROUP, f"{n}-c0", {keys.stream: ">"}, count=5)
        pipe.xadd(keys.dead, {"reason": "bench"})
        for c in range(consumers):
            consumer = f"{n}-c{c}"
            pipe.set(keys.heartbeat(consumer), consumer, px=600_000)
            record = WorkerRecord(consumer, "bench", 1, (n,), 8, 0, "0", time.time(), time.time(), {n: "closed"})
            pipe.hset(ks.workers, consumer, encode_worker(record))
    pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capabilities", type=int, default=100)
    parser.add_argument("--consumers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found")
    workdir = tempfile.mkdtemp(prefix="bench-stats-")
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        settings = Settings.build(redis_url=f"redis://127.0.0.1:{port}/0", prefix="bench")
        build(client, settings, args.capabilities, args.consumers)
        with Dispatcher(settings) as d:
            timings = []
            for _ in range(args.runs):
                start = time.perf_counter()
                stats = collect(d.gateway, KeySpace(settings.prefix))
                timings.append((time.perf_counter() - start) * 1000)
        print(
            f"collect(): {len(stats.capabilities)} capabilities, {len(stats.workers)} workers, "
            f"{stats.totals.workers} alive; totals {stats.totals}"
        )
        print(
            f"best {min(timings):.1f} ms, median {statistics.median(timings):.1f} ms, "
            f"worst {max(timings):.1f} ms over {args.runs} runs"
        )
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
