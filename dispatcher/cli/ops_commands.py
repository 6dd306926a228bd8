"""Operator subcommands that look at and steer the fleet: ``stats``, ``workers``, ``pending``, ``pause``, ``resume``.

Each is thin: parse, call one library function (``dispatcher.fleet.stats.collect``, ``FleetControl``), render
(``dispatcher.cli.render``). Data gathering never happens here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict

from dispatcher.cli import render
from dispatcher.cli.exits import Exit
from dispatcher.cli.parsing import UsageError
from dispatcher.fleet.control import FleetControl, RunningTask
from dispatcher.fleet.stats import DEFAULT_TARGET_AGE_S, collect
from dispatcher.settings import Settings
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

HOME_CLEAR = "\x1b[H\x1b[J"
"""Cursor home, then clear to the end of the screen: a --watch refresh redraws in place instead of scrolling."""


@contextmanager
def _gateway(settings: Settings) -> Iterator[Gateway]:
    client = make_client(settings)
    try:
        yield Gateway(client, settings.redis_url)
    finally:
        client.close()


# --- stats ------------------------------------------------------------------------------------------------


def configure_stats(p: argparse.ArgumentParser) -> None:
    """``dispatcher stats [--capability C ...] [--target-age-s S] [--json] [--watch [--interval-s S] [--count N]]``."""
    p.add_argument("--json", action="store_true", help="print JSON (schema: docs/stats.md)")
    p.add_argument("--capability", action="append", metavar="C", help="only this capability (repeatable)")
    p.add_argument(
        "--target-age-s",
        type=float,
        default=DEFAULT_TARGET_AGE_S,
        help=f"scaling advice: drain the backlog within this many seconds (default {DEFAULT_TARGET_AGE_S:g})",
    )
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C (in place on a terminal)")
    p.add_argument("--interval-s", type=float, default=2.0, help="with --watch: seconds between refreshes")
    p.add_argument("--count", type=int, help="with --watch: stop after this many refreshes")


def run_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Collect and print the fleet's stats, once or every ``--interval-s``."""
    if args.interval_s <= 0 or (args.count is not None and args.count < 1):
        raise UsageError("--interval-s must be > 0 and --count >= 1")
    if args.target_age_s <= 0:
        raise UsageError("--target-age-s must be > 0")
    only = list(dict.fromkeys(args.capability)) if args.capability else None
    count = args.count if args.watch else 1
    in_place = args.watch and not args.json and sys.stdout.isatty()
    with _gateway(settings) as gateway:
        keyspace = KeySpace(settings.prefix)
        n = 0
        while count is None or n < count:
            if n:
                time.sleep(args.interval_s)
            stats = collect(gateway, keyspace, capabilities=only, target_age_s=args.target_age_s)
            unknown = [c for c in only or () if c not in stats.known]
            if unknown:
                known = ", ".join(stats.known) or "none yet"
                raise UsageError(f"unknown capability {', '.join(map(repr, unknown))} (known: {known})")
            if args.json:  # one JSON document per line, so --watch --json is a JSON-lines stream
                print(json.dumps(render.stats_json(stats)), flush=True)
            else:
                print((HOME_CLEAR if in_place else "") + render.stats_table(stats), flush=True)
            n += 1
    return Exit.OK


# --- workers ----------------------------------------------------------------------------------------------


def configure_workers(p: argparse.ArgumentParser) -> None:
    """``dispatcher workers [--json]``."""
    p.add_argument("--json", action="store_true", help="print JSON (one object per worker, docs/operations.md)")


def run_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Print every worker of the registry: alive or not, what it serves, its load, circuits, version, uptime."""
    with _gateway(settings) as gateway:
        workers = collect(gateway, KeySpace(settings.prefix)).workers
    if args.json:
        print(json.dumps([render.worker_json(w) for w in workers]))
    elif not workers:
        print("no workers")
    else:
        print("\n".join(render.workers_table(workers, long=True)))
    return Exit.OK


# --- pending ----------------------------------------------------------------------------------------------


def configure_pending(p: argparse.ArgumentParser) -> None:
    """``dispatcher pending CAPABILITY [--min-idle-s N] [--limit N] [--json]``."""
    p.add_argument("capability", metavar="CAPABILITY", help="the capability whose running tasks to list")
    p.add_argument("--min-idle-s", type=float, default=0.0, help="only tasks delivered at least this long ago")
    p.add_argument("--limit", type=int, default=100, help="at most this many (oldest delivery first; default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run_pending(args: argparse.Namespace, settings: Settings) -> int:
    """Print the running (pending) tasks of a capability with their owner and whether it is alive."""
    if args.min_idle_s < 0 or args.limit < 1:
        raise UsageError("--min-idle-s must be >= 0 and --limit >= 1")
    with _gateway(settings) as gateway:
        control = FleetControl(gateway, KeySpace(settings.prefix), settings.max_payload_bytes)
        found = control.running(args.capability, args.min_idle_s, args.limit)
    if args.json:
        print(json.dumps([_running_json(t) for t in found]))
    elif not found:
        print(f"no running tasks of {args.capability}")
    else:
        header = ["entry id", "task id", "owner", "owner", "idle", "deliveries", "attempt"]
        rows = [
            [
                t.entry_id,
                t.task_id or "?",
                t.owner,
                "alive" if t.owner_alive else "DEAD",
                render.age(t.idle_s),
                *_counts(t),
            ]
            for t in found
        ]
        print("\n".join(render.table(header, rows, right=frozenset({4, 5, 6}))))
    return Exit.OK


def _counts(t: RunningTask) -> list[str]:
    return [str(t.deliveries), str(t.attempt or "?")]


def _running_json(t: RunningTask) -> dict[str, object]:
    return {**asdict(t), "idle_s": round(t.idle_s, 3)}


# --- pause / resume ---------------------------------------------------------------------------------------


def configure_flag(p: argparse.ArgumentParser) -> None:
    """``dispatcher pause|resume CAPABILITY``."""
    p.add_argument("capability", metavar="CAPABILITY", help="the capability to pause or resume")


def _flag_runner(paused: bool) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        with _gateway(settings) as gateway:
            changed = FleetControl(gateway, KeySpace(settings.prefix)).set_paused(args.capability, paused)
        verb = "paused" if paused else "resumed"
        if not changed:
            print(f"{args.capability} was already {'paused' if paused else 'running'}")
        elif paused:
            print(f"{verb} {args.capability}: workers stop reading it at their next heartbeat; submits still accepted")
        else:
            print(f"{verb} {args.capability}: workers read it again at their next heartbeat")
        return Exit.OK

    return run


run_pause = _flag_runner(True)
run_resume = _flag_runner(False)
