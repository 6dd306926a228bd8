"""The ``dispatcher`` command: submit a task, show fleet stats, operate dead letters and the reaper.

Each subcommand is a pair (configure its parser, run it) in ``COMMANDS``: parse, build settings, call one
library function, render. A user mistake prints one ``dispatcher: error: ...`` line on stderr and returns a
named exit code (``dispatcher.cli.exits.Exit``), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType

from dispatcher.cli import fleet_commands as cli_ops
from dispatcher.cli import ops_commands as ops
from dispatcher.cli.exits import Exit, exit_code, say_error
from dispatcher.cli.parsing import Parser, UsageError, add_settings_flags, parse
from dispatcher.errors import DispatcherError
from dispatcher.producer import Dispatcher
from dispatcher.settings import Settings
from dispatcher.task import Task

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

_DEFAULT_RETRIES = Task.model_fields["max_retries"].default


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(redis_url=args.redis_url, prefix=args.prefix)


# --- submit -----------------------------------------------------------------------------------------------


def _configure_submit(p: argparse.ArgumentParser) -> None:
    p.add_argument("capability", metavar="CAPABILITY", help="the capability whose workers run the task")
    p.add_argument("payload", metavar="JSON_PAYLOAD", help="the payload, as JSON")
    p.add_argument("--wait", action="store_true", help="wait for the result and print it as JSON")
    p.add_argument("--wait-timeout-s", type=float, help="with --wait: give up after this many seconds")
    p.add_argument("--timeout-s", type=float, help="the task's timeout (seconds)")
    p.add_argument("--max-retries", type=int, help=f"retries after handler failures (default {_DEFAULT_RETRIES})")
    p.add_argument("--idempotency-key", help="a second submit with this key returns the first task")
    p.add_argument("--delay-s", type=float, help="run the task no earlier than this many seconds from now")


def _run_submit(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as e:
        raise UsageError(f"JSON_PAYLOAD is not valid JSON: {e}") from None
    options = {
        name: getattr(args, name)
        for name in ("timeout_s", "max_retries", "idempotency_key")
        if getattr(args, name) is not None
    }
    with Dispatcher(_settings(args)) as dispatcher:
        handle = dispatcher.submit(args.capability, payload, delay_s=args.delay_s, **options)
        if not args.wait:
            print(handle.id)
            return Exit.OK
        print(json.dumps(handle.result(timeout_s=args.wait_timeout_s)))
    return Exit.OK


def _run_dlq(args: argparse.Namespace) -> int:
    return cli_ops.run_dlq(args, _settings(args))


def _run_reaper(args: argparse.Namespace) -> int:
    return cli_ops.run_reaper(args, _settings(args))


def _with_settings(run: Callable[[argparse.Namespace, Settings], int]) -> Run:
    return lambda args: run(args, _settings(args))


COMMANDS: dict[str, tuple[str, Configure, Run]] = {
    "submit": ("submit a task; print its id (or its result with --wait)", _configure_submit, _run_submit),
    "stats": (
        "show waiting/running/delayed/dead tasks, throughput and scaling advice per capability, and the workers",
        ops.configure_stats,
        _with_settings(ops.run_stats),
    ),
    "workers": (
        "list the workers: alive, load, circuits, version, uptime",
        ops.configure_workers,
        _with_settings(ops.run_workers),
    ),
    "pending": (
        "list the running tasks of a capability and their owners",
        ops.configure_pending,
        _with_settings(ops.run_pending),
    ),
    "pause": (
        "stop every worker reading a capability (submits still accepted)",
        ops.configure_flag,
        _with_settings(ops.run_pause),
    ),
    "resume": ("let workers read a paused capability again", ops.configure_flag, _with_settings(ops.run_resume)),
    "dlq": ("list, show, requeue or purge dead letters of a capability", cli_ops.configure_dlq, _run_dlq),
    "reaper": ("run the reaper and delayed-task mover as a process of its own", cli_ops.configure_reaper, _run_reaper),
}
"""Subcommand name -> (help, configure its parser, run it). New subcommands are added here."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="dispatcher", description="agent-dispatcher: tasks on Redis Streams.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, configure, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Flags mirror the settings' field names; unset ones fall back to DISPATCHER_* / REDIS_URL.
        add_settings_flags(p, ("redis_url", "prefix"))
        configure(p)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the ``dispatcher`` command line; returns the exit code."""
    args = parse(build_parser(), argv)
    if isinstance(args, Exit):
        return args
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C: a waiting command still closes its connections.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return COMMANDS[args.command][2](args)
    except DispatcherError as e:  # a UsageError is a ConfigError: Exit.USAGE
        say_error("dispatcher", e)
        return exit_code(e)
    except KeyboardInterrupt:
        print("dispatcher: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
