"""The ``worker`` command: ``worker --capability X [--capability Y ...] [--concurrency N] [--app M] ...``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from dispatcher.errors import ConfigError, DispatcherError
from dispatcher.settings import Settings
from workers import app
from workers.runtime import Worker

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_SECOND_SIGNAL = 130

log = logging.getLogger("workers")


def parser() -> argparse.ArgumentParser:
    """The argument parser; every ``Settings`` field has a flag of the same name (``--heartbeat-ttl-s``)."""
    p = argparse.ArgumentParser(prog="worker", description="Serve capabilities from a Redis Streams dispatcher.")
    p.add_argument("--capability", "-c", action="append", required=True, help="capability to serve (repeatable)")
    p.add_argument("--concurrency", type=int, default=10, help="tasks run at once (default 10)")
    p.add_argument("--name", help="consumer name (default host-pid-random)")
    p.add_argument("--app", help="handler module, 'module' or 'module:attr' (else DISPATCHER_APP, else pyproject)")
    p.add_argument("--burst", action="store_true", help="drain what is queued, then exit")
    p.add_argument("--no-upkeep", action="store_true", help="do not run the delayed-task mover and reaper here")
    p.add_argument("--log-level", default=os.environ.get("DISPATCHER_LOG_LEVEL", "INFO"))
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address for --metrics-port (0.0.0.0 in containers)")
    for name, field in Settings.model_fields.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=field.description or None)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    overrides: dict[str, Any] = {name: getattr(args, name) for name in Settings.model_fields}
    return Settings.from_env(**overrides)


def main(argv: list[str] | None = None) -> int:
    """Run a worker until SIGTERM/SIGINT (a second signal exits at once). Returns the exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    try:
        settings = settings_from(args)
        registry, loaded = app.load(args.app)
        missing = [c for c in args.capability if registry.get(c) is None]
        if missing:
            raise ConfigError(
                f"no handler for capability {', '.join(map(repr, missing))}; searched modules "
                f"{', '.join(loaded.modules)} (app from {loaded.source}); capabilities found: "
                f"{', '.join(registry.capabilities()) or 'none'}"
            )
        worker = Worker(
            registry,
            args.capability,
            settings,
            concurrency=args.concurrency,
            name=args.name,
            burst=args.burst,
            upkeep=not args.no_upkeep,
        )
    except ConfigError as e:
        print(f"worker: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_addr)
    try:
        asyncio.run(_serve(worker))
    except DispatcherError as e:
        print(f"worker: error: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE if "unavailable" in str(e) else EXIT_ERROR
    if worker.executor.busy_threads:
        # Sync handlers that timed out cannot be stopped; their tasks were handed back. Do not wait for them.
        log.warning("exiting with %d handler threads still running", worker.executor.busy_threads)
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting now; the reaper recovers what is left")
            logging.shutdown()
            os._exit(EXIT_SECOND_SIGNAL)
        log.info("signal received: stopping gracefully")
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await worker.run()


if __name__ == "__main__":
    sys.exit(main())
