"""``dispatcher capabilities [list] [--json]`` and ``dispatcher capabilities forget NAME [--purge-dead]``."""

from __future__ import annotations

import argparse
import json

from dispatcher.cli import render
from dispatcher.cli.exits import Exit, say_error
from dispatcher.cli.parsing import UsageError
from dispatcher.fleet.capabilities import Forgetting, Verdict, forget
from dispatcher.fleet.stats import collect
from dispatcher.settings import Settings
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace


def configure(p: argparse.ArgumentParser) -> None:
    """The flags of ``dispatcher capabilities``."""
    p.add_argument("action", nargs="?", choices=("list", "forget"), default="list", help="list (default) or forget")
    p.add_argument("name", nargs="?", metavar="NAME", help="forget: the capability to forget")
    p.add_argument("--json", action="store_true", help="list: print JSON (the capabilities of stats --json)")
    p.add_argument("--purge-dead", action="store_true", help="forget: delete its dead letters too")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """List the known capabilities, or forget one that nothing uses."""
    if args.action == "list" and (args.name or args.purge_dead):
        raise UsageError("capabilities list takes no NAME and no --purge-dead")
    if args.action == "forget" and not args.name:
        raise UsageError("capabilities forget needs the NAME of a capability")
    client = make_client(settings)
    gateway, keyspace = Gateway(client, settings.redis_url), KeySpace(settings.prefix)
    try:
        if args.action == "forget":
            return _report(forget(gateway, keyspace, args.name, args.purge_dead))
        stats = collect(gateway, keyspace)
    finally:
        client.close()
    if args.json:
        print(json.dumps({"capabilities": render.stats_json(stats)["capabilities"]}))
    else:
        print(render.capabilities_table(stats))
    return Exit.OK


def _report(outcome: Forgetting) -> int:
    name, c = repr(outcome.name), outcome.stats
    if outcome.verdict is Verdict.FORGOTTEN:
        purged = f" and its {c.dead} dead letter(s)" if c and c.dead else ""
        print(f"forgot capability {name}{purged}")
        return Exit.OK
    if outcome.verdict is Verdict.UNKNOWN:
        say_error("dispatcher", f"no capability {name} is known (dispatcher capabilities lists them)")
        return Exit.NOT_FOUND
    if outcome.verdict is Verdict.SERVED and c:
        why = f"{c.workers} live worker(s) serve it (stop them first: they add it back with every heartbeat)"
    elif outcome.verdict is Verdict.DEAD_LETTERS and c:
        why = f"it has {c.dead} dead letter(s) (dispatcher dlq list {outcome.name}; --purge-dead deletes them)"
    else:
        counts = f": {c.waiting} waiting, {c.running} running, {c.delayed} delayed" if c else ""
        why = f"it has tasks{counts} (a task may have been submitted just now)"
    say_error("dispatcher", f"not forgetting capability {name}: {why}")
    return Exit.REFUSED
