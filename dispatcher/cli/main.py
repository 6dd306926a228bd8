"""The ``dispatcher`` command: submit and look up tasks, show fleet stats, operate dead letters and the reaper.

Each subcommand is a pair (configure its parser, run it) in ``COMMANDS``: parse, build settings, call one
library function, render. A user mistake prints one ``dispatcher: error: ...`` line on stderr and returns a
named exit code (``dispatcher.cli.exits.Exit``), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from importlib.metadata import version
from types import FrameType

from dispatcher.cli import capability_commands, limit_commands, observe_commands
from dispatcher.cli import fleet_commands as cli_ops
from dispatcher.cli import ops_commands as ops
from dispatcher.cli import task_commands as tasks
from dispatcher.cli.exits import Exit, exit_code, say_error
from dispatcher.cli.parsing import Parser, add_settings_flags, parse
from dispatcher.errors import DispatcherError
from dispatcher.observe import logs
from dispatcher.settings import Settings

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(redis_url=args.redis_url, prefix=args.prefix)


def _run_dlq(args: argparse.Namespace) -> int:
    return cli_ops.run_dlq(args, _settings(args))


def _run_reaper(args: argparse.Namespace) -> int:
    return cli_ops.run_reaper(args, _settings(args))


def _with_settings(run: Callable[[argparse.Namespace, Settings], int]) -> Run:
    return lambda args: run(args, _settings(args))


COMMANDS: dict[str, tuple[str, Configure, Run]] = {
    "submit": (
        "submit a task; print its id (or its result with --wait)",
        tasks.configure_submit,
        _with_settings(tasks.run_submit),
    ),
    "status": ("show what is known of a task, as JSON", tasks.configure_status, _with_settings(tasks.run_status)),
    "result": (
        "print a task's result as JSON (--wait: until it finishes)",
        tasks.configure_result,
        _with_settings(tasks.run_result),
    ),
    "capabilities": (
        "list the known capabilities (forget NAME: remove one that nothing uses)",
        capability_commands.configure,
        _with_settings(capability_commands.run),
    ),
    "limits": (
        "list the rate limits and what waits for them (set NAME --rate N/min [--burst B]: define one)",
        limit_commands.configure,
        _with_settings(limit_commands.run),
    ),
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
    "exporter": (
        "serve queue-level Prometheus metrics read from Redis at scrape time",
        observe_commands.configure_exporter,
        _with_settings(observe_commands.run_exporter),
    ),
    "healthcheck": (
        "exit 0 when Redis (or a worker's /readyz, with --worker) answers, else 1",
        observe_commands.configure_healthcheck,
        _with_settings(observe_commands.run_healthcheck),
    ),
}
"""Subcommand name -> (help, configure its parser, run it). New subcommands are added here."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="dispatcher", description="agent-dispatcher: tasks on Redis Streams.")
    parser.add_argument("--version", action="version", version=f"dispatcher {version('agent-dispatcher')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, configure, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Flags mirror the settings' field names; unset ones fall back to DISPATCHER_* / REDIS_URL.
        add_settings_flags(p, ("redis_url", "prefix"))
        logs.add_flag(p)
        configure(p)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the ``dispatcher`` command line; returns the exit code."""
    args = parse(build_parser(), argv)
    if isinstance(args, Exit):
        return args
    # SIGTERM unwinds like Ctrl-C: a waiting command still closes its connections.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        logs.configure(
            logging.WARNING, logs.format_of(args.log_format), "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        return COMMANDS[args.command][2](args)
    except DispatcherError as e:  # a UsageError is a ConfigError: Exit.USAGE
        say_error("dispatcher", e)
        return exit_code(e)
    except KeyboardInterrupt:
        print("dispatcher: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
