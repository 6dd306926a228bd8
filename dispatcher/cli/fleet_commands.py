"""Operator subcommands of the ``dispatcher`` command: ``dlq`` and ``reaper`` (parse, call, render)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import sys
from typing import Any

from dispatcher.cli.exits import Exit
from dispatcher.cli.parsing import UsageError
from dispatcher.fleet.deadletters import DeadLetter, DeadLetters
from dispatcher.fleet.upkeep import Upkeep
from dispatcher.settings import Settings
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace


def configure_dlq(p: argparse.ArgumentParser) -> None:
    """``dispatcher dlq list|show|requeue|purge CAPABILITY [--id ID ...] [--all] [--yes] [--json]``."""
    p.add_argument("action", choices=("list", "show", "requeue", "purge"), help="what to do with the dead letters")
    p.add_argument("capability", metavar="CAPABILITY", help="the capability whose dead letters these are")
    p.add_argument("--id", dest="ids", action="append", help="a dead letter's id or its task id (repeatable)")
    p.add_argument("--all", action="store_true", help="requeue or purge every dead letter of the capability")
    p.add_argument("--yes", action="store_true", help="purge without asking")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=int, default=50, help="list: how many (oldest first)")


def run_dlq(args: argparse.Namespace, settings: Settings) -> int:
    """Run a ``dlq`` action."""
    if args.action in ("requeue", "purge") and not (args.ids or args.all):
        raise UsageError(f"dlq {args.action} needs --id ID or --all")
    if args.ids and args.all:
        raise UsageError("give --id or --all, not both")
    client = make_client(settings)
    letters = DeadLetters(
        Gateway(client, settings.redis_url), KeySpace(settings.prefix), settings.max_payload_bytes, settings.flow_window
    )
    ids = None if args.all else args.ids
    try:
        if args.action == "list":
            _print_letters(letters.oldest(args.capability, args.limit), args.json, full=False)
        elif args.action == "show":
            if not args.ids:
                raise UsageError("dlq show needs --id ID")
            found = letters.find(args.capability, args.ids)
            if not found:
                raise UsageError(f"no dead letter of {args.capability!r} has id {', '.join(args.ids)}")
            _print_letters(found, args.json, full=True)
        elif args.action == "requeue":
            done, problems = letters.requeue(args.capability, ids)
            for problem in problems:
                print(f"dispatcher: not requeued: {problem}", file=sys.stderr)
            print(json.dumps({"requeued": done, "problems": problems}) if args.json else f"requeued {done}")
            return Exit.ERROR if problems else Exit.OK  # a partial requeue
        else:
            what = "every dead letter" if args.all else f"{len(args.ids)} dead letter(s)"
            if not args.yes and not _confirm(f"purge {what} of {args.capability!r}? [y/N] "):
                raise UsageError("purge not confirmed (use --yes to purge without asking)")
            purged = letters.purge(args.capability, ids)
            print(json.dumps({"purged": purged}) if args.json else f"purged {purged}")
    finally:
        client.close()
    return Exit.OK


def _confirm(question: str) -> bool:
    if not sys.stdin or not sys.stdin.isatty():
        return False
    return input(question).strip().lower() in ("y", "yes")


def _print_letters(found: list[DeadLetter], as_json: bool, full: bool) -> None:
    rows = [_full(d) if full else d.summary() for d in found]
    if as_json:
        print(json.dumps(rows, default=repr))
        return
    if not rows:
        print("no dead letters")
        return
    if full:
        for row in rows:
            for key, value in row.items():
                print(f"{key}: {value}")
            print()
        return
    print(f"{'LETTER ID':<18} {'TASK ID':<27} {'REASON':<13} {'ATTEMPT':>7}  ERROR")
    for row in rows:
        print(f"{row['letter_id']:<18} {row['task_id']:<27} {row['reason']:<13} {row['attempt']:>7}  {row['error']}")


def _full(d: DeadLetter) -> dict[str, Any]:
    return {
        **d.summary(),
        "reclaims": d.reclaims,
        "worker": d.worker,
        "entry_id": d.entry_id,
        "payload": d.payload,
        "traceback": d.traceback,
        "raw": d.raw.hex() if d.raw else "",
    }


def configure_reaper(p: argparse.ArgumentParser) -> None:
    """``dispatcher reaper [--once]``: the fleet upkeep (reaper and delayed-task mover) as its own process."""
    p.add_argument("--once", action="store_true", help="one reaper pass and one move of due tasks, then exit")


def run_reaper(args: argparse.Namespace, settings: Settings) -> int:
    """Run the upkeep until SIGTERM/Ctrl-C (it shares the fleet-wide leases with the workers' upkeep)."""
    upkeep = Upkeep(settings, f"reaper-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        if args.once:
            moved = upkeep.promote()
            report = upkeep.reaper.run_once()
            print(
                f"moved {moved} due tasks; reclaimed {report.reclaimed}, hung {report.hung}, poison {report.poison},"
                f" deleted {report.deleted}, forgot {report.forgotten} consumers"
                + (
                    " (skipped: Redis restarted less than 1.5 heartbeat TTLs ago)"
                    if report.skipped_after_restart
                    else ""
                )
            )
            return Exit.OK
        print(f"reaper running as {upkeep.owner} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # SIGTERM and Ctrl-C both end the loop: a clean exit
            upkeep.run()
        return Exit.OK
    finally:
        upkeep.stop()
