"""The demo (``python -m workers.demo``, run by ``scripts/demo``): a private redis-server (unless one is
configured), worker processes, a batch of tasks, progress.

Every process the demo starts is stopped by its PID (SIGTERM, a bounded wait, then SIGKILL) on the way out,
whether the demo succeeded, failed or was interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from dispatcher.cli import render
from dispatcher.cli.exits import Exit, exit_code, say_error
from dispatcher.cli.parsing import Parser, parse
from dispatcher.errors import ConfigError, DispatcherError, TaskFailed
from dispatcher.fleet.stats import FleetStats, collect
from dispatcher.producer import Dispatcher
from dispatcher.settings import Settings
from dispatcher.store.keys import KeySpace
from dispatcher.task import Task

logger = logging.getLogger(__name__)

CAPABILITY = "sleep"
POLL_INTERVAL_S = 0.25
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
_LOG_TAIL_CHARS = 2000


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What to run: ``redis_url`` None means the environment's, or a private server when there is none."""

    redis_url: str | None = None
    tasks: int = 300
    workers: int = 2
    concurrency: int = 8
    max_sleep_s: float = 0.05
    deadline_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the demo is: settled tasks out of ``total``, seconds since submit, live workers."""

    done: int
    total: int
    elapsed_s: float
    workers: int


@dataclass(frozen=True, slots=True)
class DemoReport:
    """How the demo ended. ``problem`` is None only when every task succeeded."""

    total: int
    succeeded: int
    failed: int
    elapsed_s: float
    stats: FleetStats
    redis_url: str
    prefix: str
    problem: str | None


def run(
    options: DemoOptions,
    on_progress: Callable[[Progress], None] = lambda _: None,
    env: Mapping[str, str] | None = None,
) -> DemoReport:
    """Run the demo and stop everything it started before returning (or raising).

    Raises:
        ConfigError: no Redis is configured and ``redis-server`` is not installed.
        RedisUnavailable: the configured Redis cannot be reached.
    """
    source = os.environ if env is None else env
    configured = options.redis_url or source.get("DISPATCHER_REDIS_URL") or source.get("REDIS_URL")
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="dispatcher-demo-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if configured:
            # Someone else's Redis: a prefix of our own keeps the demo's keys apart from theirs.
            url, prefix = configured, f"demo-{uuid.uuid4().hex[:8]}"
        else:
            url, prefix = _start_redis(stack, workdir), "dispatcher"
        settings = Settings.from_env(source, redis_url=url, prefix=prefix)
        dispatcher = stack.enter_context(Dispatcher(settings))
        workers = [_start_worker(stack, workdir, i, options, url, prefix) for i in range(options.workers)]
        return _drive(dispatcher, workers, options, on_progress)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions here


def _drive(
    dispatcher: Dispatcher,
    workers: list[subprocess.Popen[bytes]],
    options: DemoOptions,
    on_progress: Callable[[Progress], None],
) -> DemoReport:
    rng = random.Random()
    tasks = [
        Task(capability=CAPABILITY, payload=round(rng.uniform(0.0, options.max_sleep_s), 4))
        for _ in range(options.tasks)
    ]
    keyspace = KeySpace(dispatcher.settings.prefix)
    started = time.monotonic()
    handles = dispatcher.submit_many(tasks)
    deadline = started + options.deadline_s
    problem = None
    while True:
        stats = collect(dispatcher.gateway, keyspace)
        outstanding = sum(c.waiting + c.running + c.delayed for c in stats.capabilities if c.name == CAPABILITY)
        elapsed_s = time.monotonic() - started
        on_progress(Progress(max(len(tasks) - outstanding, 0), len(tasks), elapsed_s, stats.totals.workers))
        if outstanding == 0:
            break
        if all(w.poll() is not None for w in workers):
            problem = "every worker exited before the tasks were done\n" + _log_tail(workers[0])
            break
        if time.monotonic() >= deadline:
            problem = f"{outstanding} tasks still outstanding after {options.deadline_s:g} s"
            break
        time.sleep(POLL_INTERVAL_S)
    elapsed_s = time.monotonic() - started
    succeeded = failed = 0
    if problem is None:
        for handle in handles:
            try:
                handle.result(timeout_s=START_TIMEOUT_S)
                succeeded += 1
            except TaskFailed as e:
                failed += 1
                logger.info("demo task failed task_id=%s error=%s", handle.id, e)
        if failed:
            problem = f"{failed} of {len(tasks)} tasks failed"
    url, prefix = dispatcher.settings.redis_url, dispatcher.settings.prefix
    return DemoReport(len(tasks), succeeded, failed, elapsed_s, stats, url, prefix, problem)


def _start_redis(stack: ExitStack, workdir: Path) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise ConfigError(
            "redis-server not found on PATH: install it (Debian/Ubuntu: sudo apt-get install redis-server) "
            "or pass --redis-url"
        )
    log_path = workdir / "redis.log"
    for _ in range(3):  # the free port we picked can be taken before redis-server binds it
        port = _free_port()
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(workdir), "--daemonize", "no"]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_stop, proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                return f"redis://127.0.0.1:{port}/0"
            time.sleep(0.02)
        _stop(proc)
    raise ConfigError(f"could not start redis-server: {log_path.read_text(errors='replace')[-_LOG_TAIL_CHARS:]}")


def _start_worker(
    stack: ExitStack, workdir: Path, n: int, options: DemoOptions, url: str, prefix: str
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "workers", "--capability", CAPABILITY, "--concurrency", str(options.concurrency)]
    argv += ["--redis-url", url, "--prefix", prefix]
    log_path = workdir / f"worker-{n}.log"
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches only the demo, which then stops workers before Redis.
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path  # type: ignore[attr-defined]
    stack.callback(_stop, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, wait, then SIGKILL; always reaps the process."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logger.warning("process did not stop on SIGTERM, killing pid=%s", proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


def _log_tail(proc: subprocess.Popen[bytes]) -> str:
    path: Path | None = getattr(proc, "log_path", None)
    if path is None or not path.exists():
        return ""
    return (
        f"worker pid {proc.pid} (exit code {proc.returncode}) said:\n"
        + path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def parser() -> argparse.ArgumentParser:
    """The demo's arguments."""
    p = Parser(prog="demo", description="Start Redis (unless one is given), workers and tasks; show progress.")
    p.add_argument(
        "--redis-url", help="a Redis to use (default: $DISPATCHER_REDIS_URL, $REDIS_URL, else a private one)"
    )
    p.add_argument("--tasks", type=int, default=300, help="how many tasks to submit (default 300)")
    p.add_argument("--workers", type=int, default=2, help="how many worker processes to start (default 2)")
    p.add_argument("--deadline-s", type=float, default=120.0, help="give up after this many seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    args = parse(parser(), argv)
    if isinstance(args, Exit):
        return args
    if args.tasks < 1 or args.workers < 1 or args.deadline_s <= 0:
        say_error("demo", "--tasks, --workers and --deadline-s must be positive")
        return Exit.USAGE
    tty = sys.stdout.isatty()

    def show(p: Progress) -> None:
        line = render.progress_line(p.done, p.total, p.elapsed_s, p.workers)
        print("\r" + line if tty else line, end="" if tty else "\n", flush=True)

    options = DemoOptions(redis_url=args.redis_url, tasks=args.tasks, workers=args.workers, deadline_s=args.deadline_s)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # unwinds like Ctrl-C: everything started is stopped
    try:
        report = run(options, on_progress=show)
    except DispatcherError as e:
        say_error("demo", e)
        return exit_code(e)
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\n" if tty else "", end="")
    print(render.stats_table(report.stats))
    print(f"{report.succeeded}/{report.total} succeeded in {report.elapsed_s:.1f} s ({report.redis_url})")
    if report.problem:
        say_error("demo", report.problem)
        return Exit.FAILED
    return Exit.OK


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
