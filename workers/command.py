"""The ``worker`` command: ``worker --capability X [--capability Y ...] [--concurrency N] [--app M] ...``.

A user mistake (a bad flag, setting or app module, a capability without a handler) is one ``worker: error: ...``
line on stderr and ``Exit.USAGE``; an unreachable Redis is ``Exit.UNAVAILABLE`` (``dispatcher.cli.exits``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from dispatcher import __version__
from dispatcher.cli.exits import Exit, exit_code, say_error
from dispatcher.cli.parsing import Parser, UsageError, add_settings_flags, parse, port, positive_int
from dispatcher.errors import ConfigError, DispatcherError
from dispatcher.observe import logs
from dispatcher.settings import Settings
from workers import app
from workers.runtime import DEFAULT_CONCURRENCY, Worker
from workers.startup import About

PROG = "worker"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

log = logging.getLogger("workers")


def parser() -> argparse.ArgumentParser:
    """The argument parser; every ``Settings`` field has a flag of the same name (``--heartbeat-ttl-s``)."""
    p = Parser(prog=PROG, description="Serve capabilities from a Redis Streams dispatcher.")
    p.add_argument("--version", action="version", version=f"{PROG} {version()}", help="print the version and exit")
    p.add_argument("--capability", "-c", action="append", required=True, help="capability to serve (repeatable)")
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        help=f"tasks held and run at once (default {DEFAULT_CONCURRENCY}; lower it for CPU-bound sync handlers)",
    )
    p.add_argument("--name", help="consumer name (default host-pid-random)")
    p.add_argument("--app", help="handler module, 'module' or 'module:attr' (else DISPATCHER_APP, else pyproject)")
    p.add_argument("--burst", action="store_true", help="drain what is queued, then exit")
    p.add_argument("--no-upkeep", action="store_true", help="do not run the delayed-task mover and reaper here")
    p.add_argument(
        "--log-level",
        type=str.upper,
        help=f"one of {', '.join(LOG_LEVELS)} (default: $DISPATCHER_LOG_LEVEL, else INFO)",
    )
    logs.add_flag(p)
    p.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or the standard asyncio loop",
    )
    p.add_argument(
        "--metrics-port",
        type=port,
        help="serve Prometheus /metrics and the /livez, /readyz probes on this port (1-65535)",
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address for --metrics-port (0.0.0.0 in containers)")
    add_settings_flags(p)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    overrides: dict[str, Any] = {name: getattr(args, name) for name in Settings.model_fields}
    return Settings.from_env(**overrides)


def main(argv: list[str] | None = None) -> int:
    """Run a worker until SIGTERM/SIGINT (a second signal exits at once). Returns the exit code."""
    args = parse(parser(), argv)
    if isinstance(args, Exit):
        return args
    try:
        logs.configure(_log_level(args), logs.format_of(args.log_format), LOG_TEXT_FORMAT)
        worker = _build(args)
        if args.metrics_port:
            _serve_metrics(args.metrics_addr, args.metrics_port, worker)
        run = _loop_runner(args.loop)
        # What start-up made (modules, settings, clients) lives as long as the process: keep it out of the cyclic
        # collector's way, so that its collections walk only what the tasks allocate.
        gc.freeze()
        run(_serve(worker))
    except DispatcherError as e:  # ConfigError (UsageError too): USAGE; RedisUnavailable: UNAVAILABLE
        say_error(PROG, e)
        return exit_code(e)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are in place (while the app is imported)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    code = _exit_of(worker)
    if worker.executor.busy_threads:
        # Sync handlers that timed out cannot be stopped; their tasks were handed back. Do not wait for them.
        log.warning("exiting with %d handler threads still running", worker.executor.busy_threads)
        logging.shutdown()
        os._exit(code)
    return code


def version() -> str:
    """The installed package's version (that of the source tree when it is not installed)."""
    try:
        return importlib.metadata.version("agent-dispatcher")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _log_level(args: argparse.Namespace) -> str:
    level = (args.log_level or os.environ.get("DISPATCHER_LOG_LEVEL") or "INFO").upper()
    if level not in LOG_LEVELS:
        source = "--log-level" if args.log_level else "DISPATCHER_LOG_LEVEL"
        raise UsageError(f"{source}: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _build(args: argparse.Namespace) -> Worker:
    """The worker the arguments describe, its handlers loaded.

    Raises:
        ConfigError: bad settings, an app that does not load, a capability without a handler.
    """
    settings = settings_from(args)
    registry, loaded = app.load(args.app)
    missing = [c for c in args.capability if registry.get(c) is None]
    if missing:
        raise ConfigError(
            f"no handler for capability {', '.join(map(repr, missing))}; searched modules "
            f"{', '.join(loaded.modules)} (app from {loaded.source}); capabilities found: "
            f"{', '.join(registry.capabilities()) or 'none'}"
        )
    return Worker(
        registry,
        args.capability,
        settings,
        concurrency=args.concurrency,
        name=args.name,
        burst=args.burst,
        upkeep=not args.no_upkeep,
        about=About(loaded.modules[-1], loaded.source, _metrics_address(args)),
    )


def _loop_runner(kind: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """``asyncio.run``, or uvloop's (its loop schedules tasks and callbacks in C: about 7 % fewer instructions per
    task measured with callgrind, more for sync handlers, whose results come back through callbacks)."""
    if kind == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise UsageError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return asyncio.run
    return uvloop.run


def _metrics_address(args: argparse.Namespace) -> str | None:
    return f"http://{args.metrics_addr}:{args.metrics_port}/metrics" if args.metrics_port else None


def _serve_metrics(addr: str, port: int, worker: Worker) -> None:
    """/metrics, /livez and /readyz on ``addr:port``, in a daemon thread that lives as long as the process."""
    from dispatcher.observe import http
    from workers import health

    probes = http.app(lambda: health.liveness(worker), lambda: health.readiness(worker))
    try:
        http.serve(addr, port, probes)
    except (OSError, OverflowError) as e:  # in use, not an address of this host, out of range
        raise UsageError(f"cannot serve metrics on {addr}:{port}: {e}") from None


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting now; the reaper recovers what is left")
            logging.shutdown()
            os._exit(Exit.INTERRUPTED)
        log.info("signal received: stopping gracefully")
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await worker.run()
    ignoring = [job for job in worker.runner.cancelled if not job.done()]
    if ignoring:
        # Handlers that swallow their cancellation would keep the process alive past its grace period (asyncio.run
        # waits for every task): the grace is the bound. Their tasks were handed back already.
        log.warning("exiting with %d handlers that ignored their cancellation", len(ignoring))
        logging.shutdown()
        os._exit(_exit_of(worker))


def _exit_of(worker: Worker) -> Exit:
    if worker.failure is not None:
        say_error(PROG, f"stopped: {worker.failure}")
        return Exit.ERROR
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
