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
import statistics
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
    commands: dict[str, float]
    """Redis commands per task, by name (INFO commandstats), scripts' inner calls included."""


def _redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _drained(client: redis.Redis, stream: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while client.xlen(stream) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {stream} not drained within {timeout_s} s")
        time.sleep(0.002)


def _calls(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def _measure(
    client: redis.Redis, pids: list[int], stream: str, n: int, produce: Any
) -> tuple[float, float, float, dict[str, float]]:
    calls0 = _calls(client)
    cpu0, redis0, t0 = sum(cpu_s(p) for p in pids), _redis_cpu_s(client), time.perf_counter()
    produce()
    _drained(client, stream, TIMEOUT_S)
    seconds = time.perf_counter() - t0
    redis_s, worker_s = _redis_cpu_s(client) - redis0, sum(cpu_s(p) for p in pids) - cpu0
    calls = {k: (v - calls0.get(k, 0)) / n for k, v in _calls(client).items()}
    measuring = {"info", "xlen"}  # this bench's own probes
    return redis_s, worker_s, seconds, {k: round(v, 2) for k, v in calls.items() if v > 0.005 and k not in measuring}


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

    redis_s, worker_s, seconds, calls = _measure(client, pids, raw.STREAM, n, produce)
    client.set(raw.STOP, 1)
    procs.stop_all()
    client.close()
    return Cost(shape, "raw loop", n, redis_s / n * 1e6, worker_s / n * 1e6, seconds, calls)


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

        redis_s, worker_s, seconds, calls = _measure(client, [w.pid for w in workers], stream, n, produce)
    procs.stop_all()
    client.close()
    variant = "results stored" if results else "store_result=False"
    return Cost(shape, variant, n, redis_s / n * 1e6, worker_s / n * 1e6, seconds, calls)


def supports_store_result() -> bool:
    return "store_result" in Task.model_fields


def run(n_batched: int, n_single: int, code_root: Path = REPO, repeat: int = 1) -> list[list[Cost]]:
    """Every shape ``repeat`` times, each round the raw loop, then ours with results, then without (when this
    version has the option): one list of costs per round, rounds interleaved so that a slow phase of the machine
    hits every variant alike."""
    procs = Processes()
    server = RedisServer().start()
    rounds: list[list[Cost]] = []
    try:
        for _ in range(repeat):
            out: list[Cost] = []
            for shape, n in (("batched", n_batched), ("single", n_single)):
                out.append(raw_cost(server, procs, shape, n))
                out.append(ours_cost(server, procs, shape, n, True, code_root))
                if supports_store_result():
                    out.append(ours_cost(server, procs, shape, n, False, code_root))
            rounds.append(out)
    finally:
        procs.stop_all()
        server.stop()
    return rounds


def ratios(rounds: list[list[Cost]]) -> list[dict[str, Any]]:
    """Per variant: the median cost over the rounds, and the median of its ratios to the raw loop of the same shape
    in the same round (the figure the targets are set in)."""
    out = []
    for i, first in enumerate(rounds[0]):
        costs = [r[i] for r in rounds]
        raws = [next(c for c in r if c.shape == first.shape and c.variant == "raw loop") for r in rounds]
        out.append(
            {
                **asdict(min(costs, key=lambda c: abs(c.worker_us - statistics.median(x.worker_us for x in costs)))),
                "redis_us": statistics.median(c.redis_us for c in costs),
                "worker_us": statistics.median(c.worker_us for c in costs),
                "redis_ratio": statistics.median(
                    _ratio(c.redis_us, r.redis_us) for c, r in zip(costs, raws, strict=True)
                ),
                "worker_ratio": statistics.median(
                    _ratio(c.worker_us, r.worker_us) for c, r in zip(costs, raws, strict=True)
                ),
                "rounds": len(costs),
            }
        )
    return out


def _ratio(ours: float, raw: float) -> float:
    """``ours / raw``; NaN when the raw figure is 0 (a run too short for the CPU clock's 10 ms ticks)."""
    return ours / raw if raw > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchlib.cost", description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--tasks", type=int, default=20_000, help="tasks of the batched shape (single: half)")
    p.add_argument("--code-root", type=Path, default=REPO, help="the checkout whose workers to run")
    p.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = ratios(run(args.tasks, args.tasks // 2, args.code_root, args.repeat))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'shape':<8} {'variant':<20} {'Redis µs':>9} {'xraw':>5} {'worker µs':>10} {'xraw':>5} {'s':>6}")
    for r in rows:
        print(
            f"{r['shape']:<8} {r['variant']:<20} {r['redis_us']:9.1f} {r['redis_ratio']:5.2f} "
            f"{r['worker_us']:10.1f} {r['worker_ratio']:5.2f} {r['seconds']:6.2f}  "
            + " ".join(f"{k}={v:g}" for k, v in sorted(r["commands"].items()))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
