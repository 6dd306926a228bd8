"""The cost of one task, in Redis CPU and worker CPU, against the raw loop doing the same work in the same run.

Two shapes, each run first as the raw loop (``benchlib.raw``: plain XADD, XREADGROUP, XACK+XDEL, no owner check,
no result), then through the package:

- ``batched``: one producer submitting in batches of 100, 2 processes reading up to 100 at a time (ours: the
  async ``echo`` handler, ``--concurrency 100``);
- ``single``: one producer submitting one task per call, 2 processes reading up to 16 at a time (ours: the sync
  ``noop`` handler, ``--concurrency 16``).

Ours runs with results stored and with ``store_result=False``. CPU is counted from the first submit to the last
settle: Redis' own ``used_cpu_user + used_cpu_sys``, and the reading processes' ``utime + stime``; the producer's
CPU is not counted. This module uses only the public API, so ``python -m benchlib.cost`` measures an older
checkout as well (run with that checkout's Python and ``--code-root``; see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from benchlib import raw
from benchlib.env import REPO, Processes, RedisServer, cpu_s
from dispatcher import Dispatcher, KeySpace, Settings, Task

PAYLOAD = "x" * 100
TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class Cost:
    """CPU per task of one run."""

    shape: str
    variant: str
    tasks: int
    redis_us: float
    worker_us: float
    seconds: float


def _redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _drained(client: redis.Redis, stream: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while client.xlen(stream) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {stream} not drained within {timeout_s} s")
        time.sleep(0.002)


def _measure(client: redis.Redis, pids: list[int], stream: str, produce: Any) -> tuple[float, float, float]:
    cpu0, redis0, t0 = sum(cpu_s(p) for p in pids), _redis_cpu_s(client), time.perf_counter()
    produce()
    _drained(client, stream, TIMEOUT_S)
    seconds = time.perf_counter() - t0
    return _redis_cpu_s(client) - redis0, sum(cpu_s(p) for p in pids) - cpu0, seconds


def raw_cost(server: RedisServer, procs: Processes, shape: str, n: int) -> Cost:
    """The raw loop: ``batched`` (XADD pipelined x100, reads of 100) or ``single`` (XADD one by one, reads of 16)."""
    client = server.client()
    client.flushall()
    client.xgroup_create(raw.STREAM, raw.GROUP, "$", mkstream=True)
    pids = raw.consumers(server, procs, 100 if shape == "batched" else 16)
    raw.wait_consumers_ready(client)
    entry = raw.fields()

    def produce() -> None:
        if shape == "batched":
            raw._xadd_batched(client, n, 100)
        else:
            for _ in range(n):
                client.xadd(raw.STREAM, entry)  # type: ignore[arg-type]

    redis_s, worker_s, seconds = _measure(client, pids, raw.STREAM, produce)
    client.set(raw.STOP, 1)
    procs.stop_all()
    client.close()
    return Cost(shape, "raw loop", n, redis_s / n * 1e6, worker_s / n * 1e6, seconds)


def ours_cost(server: RedisServer, procs: Processes, shape: str, n: int, results: bool, code_root: Path) -> Cost:
    """The package: ``batched`` (async echo, concurrency 100, submit_many x100) or ``single`` (sync noop,
    concurrency 16, one submit() per task), with results stored or not."""
    client = server.client()
    client.flushall()
    prefix = "b-cost"
    capability, concurrency = ("echo", 100) if shape == "batched" else ("noop", 16)
    env = {"DISPATCHER_REDIS_URL": server.url, "DISPATCHER_PREFIX": prefix}
    argv = [sys.executable, "-m", "workers", "--log-level", "WARNING", "-c", capability]
    workers = [procs.spawn([*argv, "--concurrency", str(concurrency)], env, cwd=code_root) for _ in range(2)]
    registry = KeySpace(prefix).workers
    deadline = time.monotonic() + 30
    while client.hlen(registry) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("bench: workers not ready")
        time.sleep(0.01)
    time.sleep(0.3)
    options: dict[str, Any] = {} if results else {"store_result": False}
    stream = KeySpace(prefix).capability(capability).stream
    with Dispatcher(Settings.build(redis_url=server.url, prefix=prefix)) as d:
        d.submit(capability, PAYLOAD, **options)  # warm: connects, loads the scripts, registers the capability
        _drained(client, stream, 30)

        def produce() -> None:
            if shape == "batched":
                for _ in range(n // 100):
                    d.submit_many([Task(capability=capability, payload=PAYLOAD, **options) for _ in range(100)])
            else:
                for _ in range(n):
                    d.submit(capability, PAYLOAD, **options)

        redis_s, worker_s, seconds = _measure(client, [w.pid for w in workers], stream, produce)
    procs.stop_all()
    client.close()
    variant = "results stored" if results else "store_result=False"
    return Cost(shape, variant, n, redis_s / n * 1e6, worker_s / n * 1e6, seconds)


def supports_store_result() -> bool:
    return "store_result" in Task.model_fields


def run(n_batched: int, n_single: int, code_root: Path = REPO) -> list[Cost]:
    """Every shape: the raw loop, then ours with results, then without (when this version has the option)."""
    procs = Processes()
    server = RedisServer().start()
    out: list[Cost] = []
    try:
        for shape, n in (("batched", n_batched), ("single", n_single)):
            out.append(raw_cost(server, procs, shape, n))
            out.append(ours_cost(server, procs, shape, n, True, code_root))
            if supports_store_result():
                out.append(ours_cost(server, procs, shape, n, False, code_root))
    finally:
        procs.stop_all()
        server.stop()
    return out


def ratios(costs: list[Cost]) -> list[dict[str, Any]]:
    """Each of our runs against the raw loop of its shape (same run)."""
    base = {c.shape: c for c in costs if c.variant == "raw loop"}
    return [
        {
            **asdict(c),
            "redis_ratio": c.redis_us / base[c.shape].redis_us,
            "worker_ratio": c.worker_us / base[c.shape].worker_us,
        }
        for c in costs
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchlib.cost", description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--tasks", type=int, default=20_000, help="tasks of the batched shape (single: half)")
    p.add_argument("--code-root", type=Path, default=REPO, help="the checkout whose workers to run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = ratios(run(args.tasks, args.tasks // 2, args.code_root))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'shape':<8} {'variant':<20} {'Redis µs':>9} {'xraw':>5} {'worker µs':>10} {'xraw':>5} {'s':>6}")
    for r in rows:
        print(
            f"{r['shape']:<8} {r['variant']:<20} {r['redis_us']:9.1f} {r['redis_ratio']:5.2f} "
            f"{r['worker_us']:10.1f} {r['worker_ratio']:5.2f} {r['seconds']:6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
