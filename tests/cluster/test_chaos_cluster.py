"""A short cluster run of the chaos quick tier (issue 16: "on the cluster: ... and the chaos quick tier"): the
same scenario code as ``scripts/chaos --quick --topology cluster``, each scenario on its own private 3-primary
Redis Cluster, real worker processes, ledgers outside Redis. The suite runs a representative subset (about 30 s
here); the rest of the tier runs on a cluster with ``scripts/chaos --quick --topology cluster``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from chaoslib.scenarios import SCENARIOS, run  # noqa: E402
from chaoslib.scenarios.common import Ctx  # noqa: E402
from chaoslib.verdict import table  # noqa: E402
from chaoslib.world import QUICK  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

SUBSET = {
    2: "kill -9 of a worker at each fault point: its tasks recovered",
    11: "a task that kills its worker, and one retried (after its backoff, from the delayed set) until "
    "max_retries: dead letters with their reasons",
}


def test_the_quick_tier_runs_on_a_cluster_but_the_topology_scenarios() -> None:
    on_cluster = [n for n, s in SCENARIOS.items() if s.quick and s.on_cluster]
    assert on_cluster == [1, 2, 3, 10, 11, 13, 15, 19], "17 and 18 build their own replicated topology"


def test_a_cluster_world_refuses_one_servers_options(tmp_path: Path) -> None:
    ctx = Ctx(workdir=tmp_path, timers=QUICK, quick=True, seed=1, topology="cluster")
    with pytest.raises(ValueError, match="aof"):
        ctx.world("w", aof=True)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("number", sorted(SUBSET), ids=[f"s{n}" for n in sorted(SUBSET)])
def test_scenario_on_a_cluster(number: int, tmp_path: Path) -> None:
    verdict = run(number, Ctx(workdir=tmp_path, timers=QUICK, quick=True, seed=number, topology="cluster"))
    print(f"\n{SUBSET[number]}\n{table([verdict])}")
    for check in verdict.checks:
        if check.timing:  # wall-clock checks are scripts/chaos's verdict, shown here
            print(f"  timing: {check.name}: {'ok' if check.ok else 'MISSED'} ({check.detail})")
    assert verdict.passed_untimed, f"\n{table([verdict])}\n" + "\n".join(verdict.notes)
    assert verdict.tally is not None and verdict.tally.lost == 0
