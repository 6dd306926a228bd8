"""The demo (``python -m workers.demo``, run by ``scripts/demo``): Redis (a private redis-server unless one is
configured), worker processes serving ``workers.demo_app``, and the scenes of ``workers.demo_scenes``.

The demo works under a prefix of its own (``--prefix``, else a fresh ``demo-<random>``), refuses one that already
holds keys, and deletes every key of it when done, so it leaves nothing behind in a Redis it shares. Every
process it starts is stopped by its PID on the way out, whether it succeeded, failed or was interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from dispatcher.cli import render
from dispatcher.cli.exits import Exit, exit_code, say_error
from dispatcher.cli.parsing import Parser, parse
from dispatcher.errors import ConfigError, DispatcherError
from dispatcher.fleet.stats import FleetStats
from dispatcher.producer import Dispatcher
from dispatcher.settings import Settings
from dispatcher.store import prefix as prefix_ops
from dispatcher.store.connection import mask_url
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace
from workers import demo_scenes as scenes
from workers.demo_app import FLAKY, SLOW, STRICT
from workers.demo_procs import Proc, start_redis, start_worker

logger = logging.getLogger(__name__)

HEARTBEAT_TTL_S = 2.0
"""Short liveness settings for the demo's workers, so that a killed worker's tasks come back within seconds."""
REAPER_INTERVAL_S = 0.5
BACKOFF_S = 1.0
"""The retry backoff of the demo's workers (no jitter: the retry scene shows it)."""
GRACE_S = 3.0
"""How long a demo worker stopped mid-run lets its tasks finish (the longest demo task takes 2 s)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What to run: ``redis_url`` None means the environment's, or a private server when there is none;
    ``prefix`` None means a fresh ``demo-<random>``."""

    redis_url: str | None = None
    prefix: str | None = None
    tasks: int = 300
    workers: int = 2
    concurrency: int = 8
    max_sleep_s: float = 0.05
    slow_tasks: int = 6
    slow_s: float = 2.0
    deadline_s: float = 60.0


@dataclass(slots=True)
class DemoReport:
    """How the demo ended. ``problems`` is empty only when everything expected happened."""

    redis: str
    """The Redis, for people: a masked URL of the user's Redis, or a word about the private one."""
    private: bool
    prefix: str
    elapsed_s: float = 0.0
    stats: FleetStats | None = None
    keys_deleted: int = 0
    keys_left: bool = True
    """Whether keys may be left under the prefix: the cleanup failed or found some after it."""
    problems: list[str] = field(default_factory=list)


def run(
    options: DemoOptions,
    say: Callable[[str], None] = lambda _: None,
    on_progress: Callable[[scenes.Progress], None] = lambda _: None,
    env: Mapping[str, str] | None = None,
) -> DemoReport:
    """Run the demo and stop everything it started (and delete its keys) before returning or raising.

    Raises:
        ConfigError: no Redis is configured and ``redis-server`` is not installed; or the prefix holds keys.
        RedisUnavailable: the configured Redis cannot be reached.
    """
    source = os.environ if env is None else env
    configured = options.redis_url or source.get("DISPATCHER_REDIS_URL") or source.get("REDIS_URL")
    prefix = options.prefix or f"demo-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="dispatcher-demo-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        url = configured or start_redis(stack, workdir)
        report = DemoReport(mask_url(url) if configured else "a private redis-server", not configured, prefix)
        settings = Settings.from_env(source, redis_url=url, prefix=prefix)
        dispatcher = stack.enter_context(Dispatcher(settings))
        _claim_prefix(dispatcher.gateway, KeySpace(prefix), url)
        whose = "private: started for the demo, stopped at its end" if report.private else "yours"
        say(f"Redis: {mask_url(url)} ({whose})")
        say(f"prefix: {prefix} (every key of the demo is under it, and deleted when it ends)")
        stack.callback(_delete_keys, dispatcher.gateway, KeySpace(prefix), report)  # after the workers stopped
        workers = [_worker(stack, workdir, n, options, settings, source) for n in range(options.workers)]
        stage = scenes.Stage(dispatcher, workers, say, started + options.deadline_s)
        report.problems += _play(stage, options, on_progress)
        report.stats = stage.stats()
    report.elapsed_s = time.monotonic() - started
    return report


def _play(stage: scenes.Stage, options: DemoOptions, on_progress: Callable[[scenes.Progress], None]) -> list[str]:
    steps: list[Callable[[], str | None]] = [
        lambda: scenes.batch(stage, options.tasks, options.max_sleep_s, on_progress),
        lambda: scenes.retry(stage),
        lambda: scenes.dead_letter(stage),
        lambda: scenes.kill(stage, options.slow_tasks, options.slow_s),
    ]
    problems = []
    for step in steps:
        problem = step()
        if problem is not None:
            problems.append(problem)
            if stage.remaining_s() <= 0 or not any(w.alive() for w in stage.workers):
                break  # the scenes left would only time out
    return problems


def _claim_prefix(gateway: Gateway, keyspace: KeySpace, url: str) -> None:
    # The demo deletes its prefix when done: a prefix that holds someone's keys would lose them.
    if gateway.run(prefix_ops.holds_keys(keyspace)):
        raise ConfigError(
            f"prefix {keyspace.prefix!r} already holds keys in {mask_url(url)}; the demo deletes every key of its "
            "prefix when done: give it a prefix of its own (--prefix), or leave it out for a fresh one"
        )


def _delete_keys(gateway: Gateway, keyspace: KeySpace, report: DemoReport) -> None:
    try:
        report.keys_deleted = gateway.run(prefix_ops.delete_all(keyspace))
        report.keys_left = gateway.run(prefix_ops.holds_keys(keyspace))
        if report.keys_left:
            report.problems.append(f"keys are left under prefix {keyspace.prefix} after the cleanup")
    except DispatcherError as e:
        report.problems.append(f"could not delete the keys of prefix {keyspace.prefix}: {e}")


def _worker(
    stack: ExitStack, workdir: Path, n: int, options: DemoOptions, settings: Settings, env: Mapping[str, str]
) -> Proc:
    args = ["--app", "workers.demo_app", "--concurrency", str(options.concurrency)]
    for capability in (scenes.BATCH, FLAKY, STRICT, SLOW):
        args += ["--capability", capability]
    args += ["--heartbeat-ttl-s", str(HEARTBEAT_TTL_S), "--reaper-interval-s", str(REAPER_INTERVAL_S)]
    args += ["--backoff-base-s", str(BACKOFF_S), "--backoff-jitter", "0"]
    args += ["--grace-s", str(GRACE_S)]
    child_env = {**env, "DISPATCHER_REDIS_URL": settings.redis_url, "DISPATCHER_PREFIX": settings.prefix}
    return start_worker(stack, workdir, f"demo-worker-{n + 1}", args, child_env)


def parser() -> argparse.ArgumentParser:
    """The demo's arguments."""
    p = Parser(
        prog="demo",
        description="Start workers and show tasks: a batch, a retry, a dead letter, a worker killed mid-run.",
    )
    p.add_argument(
        "--redis-url",
        help="a Redis to use (default: $DISPATCHER_REDIS_URL, else $REDIS_URL, else a private redis-server on a "
        "free loopback port, started for the demo and stopped at its end)",
    )
    p.add_argument(
        "--prefix",
        help="key prefix of the demo's keys, all deleted when it ends; refused when it already holds keys "
        "(default: a fresh demo-XXXXXXXX; $DISPATCHER_PREFIX is not used)",
    )
    p.add_argument("--tasks", type=int, default=300, help="how many tasks the batch submits (default 300)")
    p.add_argument("--workers", type=int, default=2, help="how many worker processes to start (default 2, at least 2)")
    p.add_argument("--deadline-s", type=float, default=60.0, help="give up after this many seconds (default 60)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (``Exit.OK`` only when everything expected happened)."""
    args = parse(parser(), argv)
    if isinstance(args, Exit):
        return args
    if args.tasks < 1 or args.workers < 2 or args.deadline_s <= 0:
        say_error("demo", "--tasks and --deadline-s must be positive, --workers at least 2 (one is killed)")
        return Exit.USAGE
    options = DemoOptions(
        redis_url=args.redis_url, prefix=args.prefix, tasks=args.tasks, workers=args.workers, deadline_s=args.deadline_s
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # unwinds like Ctrl-C: everything started is stopped
    try:
        report = run(
            options, say=lambda line: print(line, flush=True), on_progress=scenes.show_progress(sys.stdout.isatty())
        )
    except DispatcherError as e:
        say_error("demo", e)
        return exit_code(e)
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print_end(report)
    for problem in report.problems:
        say_error("demo", problem)
    return Exit.FAILED if report.problems else Exit.OK


def _print_end(report: DemoReport) -> None:
    if report.stats is not None:
        print()
        print(render.stats_table(report.stats))
    print()
    # The private server is gone by now: its URL would point at nothing (or at someone else's server later).
    where = "a private redis-server, now stopped and gone" if report.private else f"{report.redis}, left running"
    left = "some left" if report.keys_left else "none left"
    print(f"prefix {report.prefix}: {report.keys_deleted} keys deleted, {left} ({where})")
    verdict = "everything expected happened" if not report.problems else f"{len(report.problems)} problem(s)"
    print(f"demo done in {report.elapsed_s:.1f} s: {verdict}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
