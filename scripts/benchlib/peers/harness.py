"""The peer side of ``scripts/bench --peers``: one workload of one peer, run with the peers venv's Python.

    python -m benchlib.peers.harness celery|dramatiq|taskiq drain|latency --url URL --tasks N --log-dir DIR

It queues or submits through the peer's own client, starts the peer's own worker CLI (each worker a session
leader, stopped by its PID: SIGTERM, then SIGKILL to its process group), measures, and prints one JSON line of
raw figures (epoch seconds) that ``benchlib.peers.runner`` turns into rows. It imports only the standard library
and redis-py: the peers venv holds neither pydantic nor the dispatcher.

drain: ``--tasks`` no-op tasks queued, then the workers start. Each handler counts in process memory (first
start, last finish, count); a thread per worker process publishes those three numbers to one hash every 50 ms, so
no task pays a round trip for the measurement. The end is the later of (a) the first moment the peer's own queue
and in-flight structures are seen empty, polled every 2 ms like our own drain, and (b) the last handler finish.
The run fails unless the handlers counted exactly ``--tasks`` runs.

latency: idle workers (warmed until both processes have answered), ``--tasks`` tasks submitted at a fixed
``--rate``, each carrying its submit time; the handler returns ``[time.time() at its start, its pid]`` through
the peer's result backend. Then ``max(tasks // 4, 20)`` more, each awaited with the peer's own result call before
the next is sent (one caller, no overlap): submit to result returned.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import redis

from benchlib.env import parent_death_signal

SCRIPTS = Path(__file__).resolve().parents[2]
REPO = SCRIPTS.parent
URL_ENV = "BENCH_PEER_URL"
WORKLOAD_ENV = "BENCH_PEER_WORKLOAD"
OPTIONS_ENV = "BENCH_PEER_OPTIONS"
STATS_KEY = "bench:peer:stats"
PAYLOAD = "x" * 100
"""The ≈100-byte payload of every bench task (the same as ours)."""
PROCESSES = 2
FLUSH_INTERVAL_S = 0.05
EMPTY_POLL_S = 0.002
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 10.0


def url() -> str:
    """The private Redis of this run (the peers' CLIs import their app module, so it is read from the
    environment there; the harness sets it before anything imports a peer module)."""
    return os.environ[URL_ENV]


def workload() -> str:
    return os.environ.get(WORKLOAD_ENV, "drain")


def options() -> dict[str, Any]:
    """``--option key=value`` overrides of a peer's configuration (to try a variant; the rows record them)."""
    return dict(json.loads(os.environ.get(OPTIONS_ENV, "{}")))


class _Counter:
    """In-process handler counts, published by a daemon thread (started in each worker process on its first
    task, after any fork) instead of a round trip per task."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def record(self, started: float) -> None:
        finished = time.time()
        with self.lock:
            if self.pid != os.getpid():
                self.pid, self.count, self.first, self.last = os.getpid(), 0, started, finished
                threading.Thread(target=self._publish, name="bench-counter", daemon=True).start()
            self.count += 1
            self.first = min(self.first, started)
            self.last = max(self.last, finished)

    def _publish(self) -> None:
        client = redis.Redis.from_url(url())
        sent: tuple[int, float, float] | None = None
        while True:
            with self.lock:
                now = (self.count, self.first, self.last)
            if now != sent:
                client.hset(STATS_KEY, str(os.getpid()), json.dumps(now))
                sent = now
            time.sleep(FLUSH_INTERVAL_S)


COUNTER = _Counter()


def record(started: float) -> None:
    """Called by each peer's no-op handler with the ``time.time()`` it read at its start."""
    COUNTER.record(started)


class Driver(Protocol):
    """What a peer module's ``Driver(options)`` offers the harness."""

    def config(self) -> dict[str, str]:
        """``label`` (short, for the row) and ``detail`` (every setting that matters, for the docs)."""
        ...

    def worker_argvs(self, python: str) -> list[list[str]]:
        """One argv per process the harness starts (the peer's own CLI, by module)."""
        ...

    def worker_env(self) -> dict[str, str]:
        """Environment settings of the peer's workers."""
        ...

    def enqueue_noops(self, n: int) -> None: ...

    def outstanding(self, client: redis.Redis) -> int:
        """Tasks still queued or in flight, read from the peer's own structures."""
        ...

    def submit(self, submitted_at: float) -> Any: ...

    def result(self, handle: Any, timeout_s: float) -> list[float]: ...

    def close(self) -> None: ...


class Workers:
    """The peer's worker processes, each started as a session leader with its output in a log file."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argvs: Sequence[Sequence[str]], extra_env: dict[str, str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(SCRIPTS), **extra_env}
        for i, argv in enumerate(argvs):
            with (self.log_dir / f"worker-{i}.log").open("ab") as log:
                proc = subprocess.Popen(
                    list(argv),
                    env=env,
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=parent_death_signal(),  # noqa: PLW1509 - one prctl call, see its docstring
                )
            self.procs.append(proc)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {proc.pid} exited with {proc.returncode} (see {self.log_dir})")

    def stop(self) -> None:
        """SIGTERM each (the peer's graceful shutdown), then SIGKILL whatever is left of its process group
        (pool children, forked worker processes)."""
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)
        self.procs.clear()


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float, what: str) -> float:
    """Poll ``check()`` until true, bounded by ``timeout_s``: the ``time.time()`` it was first seen true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(interval_s)
    return time.time()


def counts(client: redis.Redis) -> list[tuple[int, float, float]]:
    return [tuple(json.loads(v)) for v in client.hvals(STATS_KEY)]  # type: ignore[misc]


def drain(driver: Driver, workers: Workers, client: redis.Redis, n: int, timeout_s: float) -> dict[str, Any]:
    client.delete(STATS_KEY)
    t0 = time.time()
    driver.enqueue_noops(n)
    queued_s = time.time() - t0
    queued = driver.outstanding(client)
    if queued != n:
        raise RuntimeError(f"{queued} tasks queued, expected {n}")
    spawned = time.time()
    workers.start(driver.worker_argvs(sys.executable), driver.worker_env())

    def empty() -> bool:
        workers.check_alive()
        return driver.outstanding(client) == 0

    empty_at = wait_until(empty, timeout_s, EMPTY_POLL_S, "queue and in-flight empty")
    wait_until(lambda: sum(c[0] for c in counts(client)) >= n, 10.0, 0.01, f"{n} handler runs counted")
    time.sleep(3 * FLUSH_INTERVAL_S)  # a duplicate run would show up by now
    stats = counts(client)
    ran = sum(c[0] for c in stats)
    if ran != n:
        raise RuntimeError(f"handlers ran {ran} times for {n} tasks")
    last = max(c[2] for c in stats)
    return {
        "tasks": n,
        "ran": ran,
        "processes_that_ran": len(stats),
        "spawned": spawned,
        "first_start": min(c[1] for c in stats),
        "last_finish": last,
        "empty_seen": empty_at,
        "end": max(empty_at, last),
        "queue_seconds": queued_s,
        "outstanding_after": driver.outstanding(client),
    }


def _warm(driver: Driver) -> None:
    """Until every worker process has answered a task (each started, connected and consuming)."""
    pids: set[float] = set()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(pids) < PROCESSES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(pids)} worker processes answered within {READY_TIMEOUT_S} s")
        pids.add(driver.result(driver.submit(time.time()), READY_TIMEOUT_S)[1])
    time.sleep(0.5)


def _paced(n: int, rate_per_s: float, each: Callable[[], None]) -> None:
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / rate_per_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        each()


def latency(driver: Driver, workers: Workers, n: int, rate_per_s: float) -> dict[str, Any]:
    workers.start(driver.worker_argvs(sys.executable), driver.worker_env())
    _warm(driver)
    sent: list[tuple[float, Any]] = []

    def submit() -> None:
        submitted = time.time()
        sent.append((submitted, driver.submit(submitted)))

    _paced(n, rate_per_s, submit)
    replies = [(submitted, driver.result(handle, RESULT_TIMEOUT_S)) for submitted, handle in sent]
    returned: list[float] = []

    def round_trip() -> None:
        submitted = time.time()
        driver.result(driver.submit(submitted), RESULT_TIMEOUT_S)
        returned.append(time.time() - submitted)

    driver.result(driver.submit(time.time()), RESULT_TIMEOUT_S)  # unmeasured, like our own warm-up
    _paced(max(n // 4, 20), rate_per_s, round_trip)
    workers.check_alive()
    return {
        "tasks": n,
        "rate_per_s": rate_per_s,
        "submit_to_start_s": [reply[0] - submitted for submitted, reply in replies],
        "processes_that_ran": len({reply[1] for _, reply in replies}),
        "submit_to_result_returned_s": returned,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchlib.peers.harness", description=__doc__)
    p.add_argument("peer", choices=("celery", "dramatiq", "taskiq"))
    p.add_argument("workload", choices=("drain", "latency"))
    p.add_argument("--url", required=True, help="a private loopback Redis (redis://127.0.0.1:PORT/0)")
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--rate", type=float, default=500.0, help="latency: submissions per second")
    p.add_argument("--timeout", type=float, default=120.0, help="drain: seconds allowed to drain")
    p.add_argument("--log-dir", required=True, help="where the workers' logs go")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="override a peer setting")
    return p.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(f"harness: signal {signum}")  # so the finally below stops the workers


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.url.startswith("redis://127.0.0.1:"):
        raise SystemExit("harness: only a loopback Redis (redis://127.0.0.1:PORT/...)")
    signal.signal(signal.SIGTERM, _terminate)
    os.environ[URL_ENV] = args.url
    os.environ[WORKLOAD_ENV] = args.workload
    os.environ[OPTIONS_ENV] = json.dumps(dict(o.split("=", 1) for o in args.option))
    module = importlib.import_module(f"benchlib.peers.{args.peer}_peer")
    driver: Driver = module.Driver(options())
    workers = Workers(Path(args.log_dir))
    client = redis.Redis.from_url(args.url)
    try:
        if args.workload == "drain":
            out = drain(driver, workers, client, args.tasks, args.timeout)
        else:
            out = latency(driver, workers, args.tasks, args.rate)
    finally:
        workers.stop()
        driver.close()
        client.close()
    out.update(peer=args.peer, workload=args.workload, config=driver.config(), options=options())
    out["loadavg"] = os.getloadavg()[0]
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
