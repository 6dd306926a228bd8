"""The scenarios of issue 5, by number. Each takes a ``Ctx`` and returns a ``Verdict``; each stops by itself."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from chaoslib.scenarios import bad_input, failover, kills, network, permits, redis_faults, security
from chaoslib.scenarios.common import Ctx
from chaoslib.verdict import Verdict


@dataclass(frozen=True, slots=True)
class Scenario:
    number: int
    title: str
    run: Callable[[Ctx, Verdict], None]
    quick: bool
    full_only: bool = False
    on_cluster: bool = False
    """Runs on a 3-primary Redis Cluster too (``scripts/chaos --topology cluster``): it needs no fault of one
    server (a Redis kill, AOF, a proxy, a memory limit) and builds no topology of its own."""


SCENARIOS: dict[int, Scenario] = {
    s.number: s
    for s in (
        Scenario(1, "worker kill storm", kills.kill_storm, quick=True, on_cluster=True),
        Scenario(2, "kill at exact fault points", kills.kill_points, quick=True, on_cluster=True),
        Scenario(3, "detection to redelivery", kills.redelivery, quick=True, on_cluster=True),
        Scenario(4, "long task on a live worker", kills.long_task, quick=False),
        Scenario(5, "zombie (SIGSTOP past lease)", kills.zombie, quick=False),
        Scenario(6, "redis kill -9 under load, AOF", redis_faults.redis_crash, quick=False),
        Scenario(7, "redis unreachable (proxy reset)", network.unreachable, quick=False),
        Scenario(8, "half-open connection (blackhole)", network.blackhole, quick=False),
        Scenario(9, "reply loss on submit and read", network.reply_loss, quick=False),
        Scenario(10, "malformed entries", bad_input.malformed, quick=True, on_cluster=True),
        Scenario(11, "poison task kills its process", bad_input.poison, quick=True, on_cluster=True),
        Scenario(12, "redis memory full", redis_faults.memory_full, quick=False),
        Scenario(13, "stream/group deleted under workers", redis_faults.deleted, quick=True, on_cluster=True),
        Scenario(14, "memory bound, 1M tasks", redis_faults.memory_bound, quick=False, full_only=True),
        Scenario(15, "graceful shutdown under load", kills.graceful, quick=True, on_cluster=True),
        Scenario(16, "security: ACL, TLS, no pickle", security.security, quick=False),
        Scenario(17, "cluster primary kill -9 under load", failover.cluster_failover, quick=True),
        Scenario(18, "sentinel primary kill -9 under load", failover.sentinel_failover, quick=True),
        Scenario(19, "kill -9 of permit holders under load", permits.permit_kills, quick=True, on_cluster=True),
    )
}


def run(number: int, ctx: Ctx) -> Verdict:
    """Run one scenario; an exception becomes the verdict's error (the world is closed by the scenario)."""
    scenario = SCENARIOS[number]
    verdict = Verdict(number, scenario.title)
    started = time.monotonic()
    try:
        scenario.run(ctx, verdict)
    except Exception as e:
        verdict.error = f"{type(e).__name__}: {e}"
        verdict.notes.append(traceback.format_exc()[-3000:])
    verdict.seconds = time.monotonic() - started
    return verdict
