"""One scenario's world: a private Redis, workers, producers, the ledgers, and counting the outcome."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from chaoslib import ledger
from chaoslib.procs import Procs, RedisProc, worker_argv, worker_env
from dispatcher import Dispatcher, DispatcherError, Settings, Task
from dispatcher.store.keys import CapabilityKeys, KeySpace


@dataclass(frozen=True, slots=True)
class Timers:
    """Worker and reaper timers of a run (scaled down from the defaults so that a run fits in minutes)."""

    heartbeat_ttl_s: float = 2.0
    reaper_interval_s: float = 0.5
    block_ms: int = 200
    grace_s: float = 5.0
    socket_timeout_s: float = 5.0

    def flags(self) -> list[str]:
        return [
            *("--heartbeat-ttl-s", str(self.heartbeat_ttl_s), "--reaper-interval-s", str(self.reaper_interval_s)),
            *("--block-ms", str(self.block_ms), "--grace-s", str(self.grace_s)),
            *("--socket-timeout-s", str(self.socket_timeout_s)),
        ]

    @property
    def redelivery_bound_s(self) -> float:
        """The promise of scenario 3: heartbeat TTL + reaper interval + 1 s."""
        return self.heartbeat_ttl_s + self.reaper_interval_s + 1.0


QUICK = Timers(heartbeat_ttl_s=2.0, reaper_interval_s=0.5)
FULL = Timers(heartbeat_ttl_s=3.0, reaper_interval_s=1.0)


@dataclass(slots=True)
class Tally:
    """Outcome counted from the ledgers (outside Redis) and the dead-letter streams."""

    submitted: int = 0
    completed: int = 0
    lost: int = 0
    duplicates: int = 0
    """Extra handler runs: executions beyond one per task."""
    duplicated_tasks: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    lost_sample: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "duplicated_tasks": self.duplicated_tasks,
            "dead": dict(self.dead),
            "lost_sample": self.lost_sample,
        }


class World:
    """A private redis-server, the processes started for one scenario, and its ledgers (under ``workdir``)."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        timers: Timers,
        seed: int,
        redis_args: Sequence[str] = (),
        aof: bool = False,
    ) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.timers = timers
        self.rng = random.Random(seed)
        self.procs = Procs(self.dir)
        self.redis = RedisProc(self.procs, self.dir, redis_args, aof=aof)
        self.prefix = f"chaos{seed}"
        self.keyspace = KeySpace(self.prefix)
        self.exec_path = self.dir / "executions.ledger"
        self.submit_path = self.dir / "submitted.ledger"
        self.runs_path = self.dir / "runs.ledger"
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.url = ""
        self._clients: list[redis.Redis] = []
        self._closers: list[Callable[[], None]] = []

    def __enter__(self) -> World:
        self.redis.start()
        self.url = self.redis.url
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        for client in self._clients:
            client.close()
        self.procs.stop_all(list(self.workers.values()))  # workers first: they unregister while Redis is up
        self.procs.stop_all()

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    # ---- clients and workers ---------------------------------------------------------------------------

    def client(self) -> redis.Redis:
        """A direct client to the private server (never through a proxy): checks and fault injection."""
        c = self.redis.client()
        self._clients.append(c)
        return c

    def uptime_s(self) -> float:
        """How long the Redis has been up (a fresh one makes the reaper wait on purpose)."""
        return float(self.client().info("server")["uptime_in_seconds"])

    def settings(self, url: str | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": url or self.url,
            "prefix": self.prefix,
            "heartbeat_ttl_s": self.timers.heartbeat_ttl_s,
            "reaper_interval_s": self.timers.reaper_interval_s,
            "block_ms": self.timers.block_ms,
            "grace_s": self.timers.grace_s,
            "socket_timeout_s": self.timers.socket_timeout_s,
        }
        values.update(overrides)
        return Settings.build(**values)

    def keys(self, capability: str) -> CapabilityKeys:
        return self.keyspace.capability(capability)

    def start_worker(
        self,
        name: str,
        capabilities: Sequence[str] = ("echo",),
        concurrency: int = 8,
        fault: str = "",
        extra: Sequence[str] = (),
        app: str | None = None,
        url: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m workers`` as consumer ``name``; with ``wait``, return once its heartbeat exists."""
        args = ["--concurrency", str(concurrency), *self.timers.flags(), "--log-level", log_level, *extra]
        if app:
            args += ["--app", app]
        argv = worker_argv(url or self.url, self.prefix, name, capabilities, args)
        proc = self.procs.spawn(f"worker-{name}", argv, worker_env(self.exec_path, fault, env))
        self.workers[name] = proc
        if wait:
            self.wait_alive(name, capabilities[0], proc)
        return proc

    def wait_alive(self, name: str, capability: str, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
        c = self.client()
        key = self.keys(capability).heartbeat(name)
        deadline = time.monotonic() + timeout_s
        while not c.exists(key):
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited {proc.returncode}:\n{self.procs.log(proc)[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not beat within {timeout_s} s")
            time.sleep(0.05)

    # ---- counting --------------------------------------------------------------------------------------

    def dead_letters(self, capabilities: Iterable[str]) -> list[dict[str, str]]:
        """Every dead letter of ``capabilities``: task_id, reason, entry_id (read from Redis, bounded)."""
        c = self.client()
        out = []
        for capability in capabilities:
            for _, fields in c.xrange(self.keys(capability).dead, count=1_000_000):
                out.append({k.decode(): v.decode(errors="replace") for k, v in fields.items() if k != b"raw"})
        return out

    def tally(self, capabilities: Iterable[str], submitted: Sequence[str] | None = None) -> Tally:
        """Count the outcome of ``submitted`` (default: the producer ledger)."""
        ids = list(ledger.submitted(self.submit_path) if submitted is None else submitted)
        wanted = set(ids)
        runs = Counter(e.task_id for e in ledger.executions(self.exec_path) if e.task_id in wanted)
        letters = [d for d in self.dead_letters(capabilities) if d.get("task_id") in wanted]
        dead_ids = {d["task_id"] for d in letters}
        lost = [t for t in wanted if t not in runs and t not in dead_ids]
        return Tally(
            submitted=len(wanted),
            completed=len(runs),
            lost=len(lost),
            duplicates=sum(runs.values()) - len(runs),
            duplicated_tasks=sum(1 for n in runs.values() if n > 1),
            dead=Counter(d.get("reason", "?") for d in letters),
            lost_sample=sorted(lost)[:5],
        )

    def wait_settled(
        self, capabilities: Sequence[str], timeout_s: float, submitted: Sequence[str] | None = None
    ) -> tuple[Tally, float]:
        """Poll until nothing of ``submitted`` is lost and the streams are drained (every entry settled: a
        finished run is in the ledger before its result is recorded), or the deadline; returns the tally and
        the wait."""
        start = time.monotonic()
        deadline = start + timeout_s
        if submitted is not None:
            big = len(submitted) > 50_000
        else:
            big = self.submit_path.exists() and self.submit_path.stat().st_size > 4_000_000
        while True:
            # The drain check is cheap; the tally reads whole ledgers, so it runs once drained (or at the end).
            done = self.drained(capabilities)
            if done or time.monotonic() > deadline:
                tally = self.tally(capabilities, submitted)
                if tally.lost == 0 or time.monotonic() > deadline:
                    return tally, time.monotonic() - start
            time.sleep(1.0 if big else 0.1)

    def drained(self, capabilities: Iterable[str]) -> bool:
        """No entry left in any stream (settled entries are deleted) and nothing delayed."""
        c = self.client()
        for capability in capabilities:
            keys = self.keys(capability)
            if c.xlen(keys.stream) or c.zcard(keys.delayed):
                return False
        return True


class Producer(threading.Thread):
    """Submits ``total`` tasks in batches from a thread; appends each id to the ledger after submit returned.

    Errors (Redis down, full) are counted and the batch is retried with new ids after a short pause: a batch
    that raised is not in the ledger (it may or may not be in Redis; only returned submits are promised).
    """

    def __init__(
        self,
        world: World,
        capability: str,
        total: int,
        batch: int = 50,
        payload: Callable[[int], Any] | None = None,
        deadline_s: float = 300.0,
        url: str | None = None,
        pause_s: float = 0.0,
        options: Callable[[int], dict[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(name=f"producer-{capability}", daemon=True)
        self.world = world
        self.capability = capability
        self.total = total
        self.batch = batch
        self.payload = payload or (lambda i: i)
        self.options = options or (lambda i: {})
        """Task options of the ``i``-th task (``concurrency_key``, ``rate_limits``...)."""
        self.deadline = time.monotonic() + deadline_s
        self.pause_s = pause_s
        self.settings = world.settings(url, **settings)
        self.sent = 0
        self.errors: Counter[str] = Counter()
        self.latencies_s: list[float] = []
        self.failures: list[tuple[float, float, str]] = []
        """(time, seconds the failing call took, error type) per failed submit."""
        self.stop_event = threading.Event()
        self.finished_at = 0.0

    def run(self) -> None:
        out = ledger.Appender(self.world.submit_path)
        try:
            with Dispatcher(self.settings) as d:
                while self.sent < self.total and not self.stop_event.is_set() and time.monotonic() < self.deadline:
                    n = min(self.batch, self.total - self.sent)
                    tasks = [self._task(self.sent + i) for i in range(n)]
                    t0 = time.monotonic()
                    try:
                        handles = d.submit_many(tasks)
                    except DispatcherError as e:
                        self.errors[type(e).__name__] += 1
                        self.failures.append((time.time(), time.monotonic() - t0, type(e).__name__))
                        self.stop_event.wait(0.05)
                        continue
                    self.latencies_s.append(time.monotonic() - t0)
                    out.write([h.id for h in handles])
                    self.sent += n
                    if self.pause_s:
                        self.stop_event.wait(self.pause_s)
        finally:
            out.close()
            self.finished_at = time.monotonic()

    def _task(self, i: int) -> Task:
        return Task(capability=self.capability, payload=self.payload(i), **self.options(i))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
