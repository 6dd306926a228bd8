"""The ``exporter`` and ``healthcheck`` subcommands of ``dispatcher``: thin, over ``dispatcher.observe``."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from dispatcher.cli.exits import Exit, say_error
from dispatcher.cli.parsing import UsageError
from dispatcher.observe import checks
from dispatcher.observe.exporter import DEFAULT_PORT, DEFAULT_SCRAPE_TIMEOUT_S, Exporter
from dispatcher.settings import Settings

PROG = "dispatcher"


def configure_exporter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    p.add_argument("--addr", default="127.0.0.1", help="address to serve on (default 127.0.0.1; 0.0.0.0 in containers)")
    p.add_argument(
        "--scrape-timeout-s",
        type=float,
        default=DEFAULT_SCRAPE_TIMEOUT_S,
        help="Redis connect and read timeout of each scrape, after which it answers dispatcher_redis_up 0 "
        f"(default {DEFAULT_SCRAPE_TIMEOUT_S:g})",
    )


def run_exporter(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the exporter until SIGTERM or SIGINT, then exit 0."""
    if args.scrape_timeout_s <= 0:
        raise UsageError("--scrape-timeout-s must be > 0")
    exporter = Exporter(settings, args.scrape_timeout_s)
    try:
        port = exporter.start(args.addr, args.port)
    except (OSError, OverflowError) as e:  # in use, not an address of this host, out of range
        exporter.close()
        raise UsageError(f"cannot serve on {args.addr}:{args.port}: {e}") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        exporter.stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"{PROG} exporter: serving http://{args.addr}:{port}/metrics (and /livez, /readyz)", flush=True)
        exporter.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return Exit.OK


def configure_healthcheck(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--worker",
        metavar="URL",
        help="check this worker's (or exporter's) /readyz, e.g. http://127.0.0.1:9100, instead of Redis",
    )
    p.add_argument("--timeout-s", type=float, default=5.0, help="give up after this many seconds (default 5)")


def run_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when healthy; else one ``dispatcher: error: unhealthy: ...`` line and exit 1."""
    if args.timeout_s <= 0:
        raise UsageError("--timeout-s must be > 0")
    if args.worker is not None:
        reason = checks.worker(checks.readyz_url(args.worker), args.timeout_s)
    else:
        reason = checks.redis(settings, args.timeout_s)
    if reason is not None:
        say_error(PROG, f"unhealthy: {reason}")
        return Exit.ERROR
    print("ok", file=sys.stdout)
    return Exit.OK
