"""Task subcommands of the ``dispatcher`` command: ``submit``, ``status`` and ``result`` (parse, call, render).

They go through the producer API (``dispatcher.producer.Dispatcher``), as a program would. Values are printed in
the JSON form of ``dispatcher.cli.json_values`` (bytes as ``{"$bytes": "<base64>"}``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from dispatcher.cli.exits import Exit, say_error
from dispatcher.cli.json_values import to_json
from dispatcher.cli.parsing import UsageError
from dispatcher.errors import RedisError, ResultTimeout
from dispatcher.fleet.stats import collect
from dispatcher.producer import Dispatcher, TaskHandle
from dispatcher.settings import Settings
from dispatcher.task import Task

_DEFAULT_RETRIES = Task.model_fields["max_retries"].default
PAYLOAD_HELP = "the payload: JSON, or - to read the JSON from stdin, or @PATH to read it from a file"


def read_payload(source: str) -> Any:
    """The payload that ``source`` gives: JSON text, ``-`` (stdin) or ``@path`` (a file).

    Neither ``-`` nor ``@...`` is valid JSON, so the three forms never overlap.

    Raises:
        UsageError: the file cannot be read, or the text is not valid UTF-8 JSON.
    """
    where = "JSON_PAYLOAD"
    try:
        if source == "-":
            where = "the payload read from stdin"
            text: str | bytes = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        elif source.startswith("@"):
            where = f"payload file {source[1:]!r}"
            text = Path(source[1:]).read_bytes()
        else:
            text = source
        return json.loads(text)
    except OSError as e:
        raise UsageError(f"cannot read {where}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{where} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{where} is not valid JSON: {e}") from None


def print_value(value: Any) -> None:
    """Print a task's value as one line of JSON (bytes and other non-JSON msgpack values in their JSON form)."""
    print(json.dumps(to_json(value), allow_nan=False), flush=True)


# --- submit -----------------------------------------------------------------------------------------------


def configure_submit(p: argparse.ArgumentParser) -> None:
    """``dispatcher submit CAPABILITY JSON_PAYLOAD|-|@PATH [--wait [--wait-timeout-s N]] [task options]``."""
    p.add_argument("capability", metavar="CAPABILITY", help="the capability whose workers run the task")
    p.add_argument("payload", metavar="JSON_PAYLOAD", help=PAYLOAD_HELP)
    p.add_argument("--wait", action="store_true", help="wait for the result and print it as JSON")
    p.add_argument("--wait-timeout-s", type=float, help="with --wait: give up after this many seconds")
    p.add_argument("--timeout-s", type=float, help="the task's timeout (seconds)")
    p.add_argument("--max-retries", type=int, help=f"retries after handler failures (default {_DEFAULT_RETRIES})")
    p.add_argument("--idempotency-key", help="a second submit with this key returns the first task")
    p.add_argument("--delay-s", type=float, help="run the task no earlier than this many seconds from now")
    p.add_argument("--priority", type=int, help="0-9, higher first among the waiting tasks that have one")


def run_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Submit one task; print its id, or with ``--wait`` its result. Warns when no live worker serves it."""
    payload = read_payload(args.payload)
    options = {
        name: getattr(args, name)
        for name in ("timeout_s", "max_retries", "idempotency_key", "priority")
        if getattr(args, name) is not None
    }
    with Dispatcher(settings) as dispatcher:
        handle = dispatcher.submit(args.capability, payload, delay_s=args.delay_s, **options)
        served, hint = _live_workers(dispatcher, handle.capability)
        if served == 0:
            print(
                f"dispatcher: warning: no live worker serves capability {handle.capability!r}; the task waits until"
                f" one does ({hint})",
                file=sys.stderr,
                flush=True,
            )
        if not args.wait:
            print(handle.id, flush=True)
            return Exit.OK
        return _wait_and_print(handle, args.wait_timeout_s, served)


def _live_workers(dispatcher: Dispatcher, capability: str) -> tuple[int | None, str]:
    """Live workers of ``capability`` by the fleet's stats, and which capabilities have any (for a hint). None:
    the check itself failed, which is said on stderr."""
    try:
        stats = collect(dispatcher.gateway, dispatcher.core.keyspace)
    except RedisError as e:  # the task is submitted: report the failed check, do not fail the command
        print(f"dispatcher: warning: could not check for live workers: {e}", file=sys.stderr, flush=True)
        return None, ""
    served = [c.name for c in stats.capabilities if c.workers > 0]
    hint = f"capabilities with live workers: {', '.join(served)}" if served else "no worker is alive at all"
    return next((c.workers for c in stats.capabilities if c.name == capability), 0), hint


def _wait_and_print(handle: TaskHandle, timeout_s: float | None, served: int | None) -> int:
    if timeout_s is None:
        hint = "; no live worker serves it yet" if served == 0 else ""
        print(
            f"dispatcher: waiting for task {handle.id} of capability {handle.capability!r} (no timeout{hint};"
            " Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
    print_value(handle.result(timeout_s=timeout_s))
    return Exit.OK


# --- status and result ------------------------------------------------------------------------------------


def _configure_lookup(p: argparse.ArgumentParser) -> None:
    p.add_argument("task_id", metavar="TASK_ID", help="the id that submit printed")
    p.add_argument("--capability", help="the task's capability (by default every known capability is searched)")


def configure_status(p: argparse.ArgumentParser) -> None:
    """``dispatcher status TASK_ID [--capability C]``."""
    _configure_lookup(p)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print what Redis knows of a task as one JSON object (``TaskInfo``); ``Exit.NOT_FOUND`` for an unknown id."""
    with Dispatcher(settings) as dispatcher:
        info = dispatcher.handle(args.task_id, args.capability).info()
    print(json.dumps(dataclasses.asdict(info)), flush=True)
    return Exit.OK


def configure_result(p: argparse.ArgumentParser) -> None:
    """``dispatcher result TASK_ID [--wait [--timeout-s N]] [--capability C]``."""
    _configure_lookup(p)
    p.add_argument("--wait", action="store_true", help="wait for the task to finish (else: exit 8 if it has not)")
    p.add_argument("--timeout-s", type=float, help="with --wait: give up after this many seconds (exit 5)")


def run_result(args: argparse.Namespace, settings: Settings) -> int:
    """Print a task's result as JSON; a failed task is one error line and ``Exit.FAILED``."""
    if args.timeout_s is not None and not args.wait:
        raise UsageError("--timeout-s needs --wait (without --wait the result is read once)")
    if args.timeout_s is not None and args.timeout_s < 0:
        raise UsageError("--timeout-s must be >= 0")
    with Dispatcher(settings) as dispatcher:
        handle = dispatcher.handle(args.task_id, args.capability)
        if args.wait:
            served = _live_workers(dispatcher, handle.capability)[0] if args.timeout_s is None else None
            return _wait_and_print(handle, args.timeout_s, served)
        try:
            value = handle.result(timeout_s=0)
        except ResultTimeout:
            say_error(
                "dispatcher",
                f"task {handle.id} of capability {handle.capability!r} has not finished (status:"
                f" {handle.status()}); use --wait to wait for it",
            )
            return Exit.NOT_FINISHED
    print_value(value)
    return Exit.OK
