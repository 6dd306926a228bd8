"""``scripts/chaos [--quick] [--scenario N ...] [--seed S] [--json PATH] [--keep] [--topology single|cluster]``: run,
print verdicts, write JSON."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chaoslib.scenarios import SCENARIOS, run
from chaoslib.scenarios.common import Ctx
from chaoslib.topology_world import KINDS
from chaoslib.verdict import table, write_json
from chaoslib.world import FULL, QUICK

EXIT_OK = 0
EXIT_FAILED = 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaos", description="Chaos and bad-input scenarios of agent-dispatcher.")
    p.add_argument(
        "--quick", action="store_true", help="the quick tier: scenarios 2 3 10 11 13 15 17 18 19 and a small 1"
    )
    p.add_argument("--scenario", type=int, action="append", choices=sorted(SCENARIOS), help="run only these")
    p.add_argument("--seed", type=int, default=None, help="seed of every random choice (default: time)")
    p.add_argument("--json", type=Path, default=None, help="report path (default chaos-report.json in the cwd)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, ledgers, AOF files)")
    p.add_argument(
        "--topology",
        choices=KINDS,
        default="single",
        help="run each scenario on a private redis-server (default) or a private 3-primary Redis Cluster; on a "
        "cluster, the scenarios that need one server (or build their own topology) are skipped",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    if args.scenario:
        numbers = args.scenario
    elif args.quick:
        numbers = [n for n, s in SCENARIOS.items() if s.quick]
    else:
        numbers = sorted(SCENARIOS)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    timers = QUICK if args.quick else FULL
    ctx = Ctx(workdir=workdir, timers=timers, quick=args.quick, seed=seed, topology=args.topology)
    tier = "quick" if args.quick else "full"
    print(f"chaos: seed={seed} tier={tier} topology={args.topology} scenarios={numbers} workdir={workdir}")
    verdicts = []
    for number in numbers:
        if args.quick and SCENARIOS[number].full_only:
            continue
        if args.topology == "cluster" and not SCENARIOS[number].on_cluster:
            print(f"-- scenario {number}: {SCENARIOS[number].title}: skipped, not run on a cluster", flush=True)
            continue
        print(f"-- scenario {number}: {SCENARIOS[number].title} ...", flush=True)
        verdict = run(number, ctx)
        word = "PASS" if verdict.passed else "FAIL"
        print(f"   {word} in {verdict.seconds:.1f}s", flush=True)
        verdicts.append(verdict)
    print()
    print(table(verdicts))
    report = args.json or Path("chaos-report.json")
    write_json(report, verdicts, ["scripts/chaos", *(argv if argv is not None else sys.argv[1:])], ctx.timers, seed)
    print(f"\nreport: {report}")
    if args.keep or not all(v.passed for v in verdicts):
        print(f"logs and ledgers kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return EXIT_OK if all(v.passed for v in verdicts) else EXIT_FAILED
