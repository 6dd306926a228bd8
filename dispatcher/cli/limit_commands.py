"""``dispatcher limits [list] [--json]``, ``limits set NAME --rate N/min [--burst B]``, ``limits set-concurrency
CAPABILITY --per-key N`` and ``limits set-weight CAPABILITY TENANT W``."""

from __future__ import annotations

import argparse
import json

from dispatcher.cli.exits import Exit
from dispatcher.cli.parsing import UsageError
from dispatcher.fleet import ratelimits
from dispatcher.settings import Settings
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace


def configure(p: argparse.ArgumentParser) -> None:
    """The flags of ``dispatcher limits``."""
    p.add_argument(
        "action",
        nargs="?",
        choices=("list", "set", "set-concurrency", "set-weight"),
        default="list",
        help="list (default), set, set-concurrency",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="set: the limit; set-concurrency: the capability")
    p.add_argument("tenant", nargs="?", metavar="TENANT", help="set-weight: the fairness_key")
    p.add_argument("weight", nargs="?", type=float, metavar="WEIGHT", help="set-weight: its weight (default 1)")
    p.add_argument("--per-key", type=int, help="set-concurrency: the most tasks of one concurrency_key at once")
    p.add_argument("--rate", help="set: units per time, e.g. 500/min, 100/s")
    p.add_argument("--burst", type=int, help="set: the most units taken at once (default: one second of the rate)")
    p.add_argument("--json", action="store_true", help="list: print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """List the limits, or create or change one."""
    if args.action == "set" and (not args.name or not args.rate):
        raise UsageError("limits set needs a NAME and --rate (e.g. dispatcher limits set openai-rpm --rate 500/min)")
    if args.action == "set-concurrency" and (not args.name or args.per_key is None):
        raise UsageError("limits set-concurrency needs a CAPABILITY and --per-key N")
    if args.action == "list" and (args.name or args.rate or args.burst is not None or args.per_key is not None):
        raise UsageError("limits list takes no NAME, --rate, --burst or --per-key")
    rate = ratelimits.parse_rate(args.rate) if args.action == "set" else 0.0
    client = make_client(settings)
    gateway, keyspace = Gateway(client, settings.redis_url), KeySpace(settings.prefix)
    try:
        if args.action == "set-weight":
            return _set_weight(args, gateway, keyspace)
        if args.action == "set-concurrency":
            ratelimits.set_concurrency(gateway, keyspace, args.name, args.per_key)
            print(f"capability {args.name!r}: at most {args.per_key} running per concurrency_key")
            return Exit.OK
        if args.action == "set":
            burst = ratelimits.define(gateway, keyspace, args.name, rate, args.burst)
            print(f"limit {args.name!r}: {rate:g}/min, burst {burst}")
            return Exit.OK
        view = ratelimits.describe(gateway, keyspace)
    finally:
        client.close()
    if args.json:
        print(json.dumps(_json(view)))
    else:
        print(_table(view))
    return Exit.OK


def _set_weight(args: argparse.Namespace, gateway: Gateway, keyspace: KeySpace) -> int:
    if not args.name or not args.tenant or args.weight is None:
        raise UsageError("limits set-weight needs a CAPABILITY, a TENANT and a WEIGHT")
    ratelimits.set_weight(gateway, keyspace, args.name, args.tenant, args.weight)
    print(f"capability {args.name!r}: tenant {args.tenant!r} weighs {args.weight:g}")
    return Exit.OK


def _json(view: ratelimits.LimitsView) -> dict[str, object]:
    return {
        "limits": [
            {"name": v.name, "rate_per_min": v.rate_per_min, "burst": v.burst, "available": v.available}
            for v in view.limits
        ],
        "waiting_for_limit": view.waiting_for_limit,
        "waiting_for_key": view.waiting_for_key,
        "concurrency_caps": view.caps,
    }


def _table(view: ratelimits.LimitsView) -> str:
    lines = [f"{'limit':<24} {'rate/min':>12} {'burst':>10} {'available':>10}"]
    lines += [f"{v.name:<24} {v.rate_per_min:>12g} {v.burst:>10} {v.available:>10}" for v in view.limits]
    if not view.limits:
        lines.append("(no limits: dispatcher limits set NAME --rate N/min)")
    for capability, cap in sorted(view.caps.items()):
        lines.append(f"concurrency cap: {capability}: {cap} per key")
    for capability, count in sorted(view.waiting_for_key.items()):
        lines.append(f"waiting for a key's permit: {capability}: {count} task(s)")
    for capability, count in sorted(view.waiting_for_limit.items()):
        lines.append(f"waiting for a limit: {capability}: {count} task(s)")
    return "\n".join(lines)
