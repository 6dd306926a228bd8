"""Failover of a replicated Redis under load: 17 a Redis Cluster primary, 18 a Sentinel-managed primary, each
killed with kill -9 while producers submit and workers drain. Counted: acknowledged submits lost (neither run nor
dead-lettered), duplicate runs, producer errors, the time until a replica took over and until work resumed; with
``wait_replicas=1`` (the verdict's tally, where no acknowledged submit may be lost) and, in the full tier, without
(figures only: asynchronous replication may lose acknowledged writes, and how many is what is measured)."""

from __future__ import annotations

import time
from typing import Any

import redis

from chaoslib import ledger
from chaoslib.scenarios.common import Ctx, tracebacks, wait_for
from chaoslib.scenarios.redis_faults import _reclaims_after
from chaoslib.topologies import ClusterProcs
from chaoslib.topology_world import TopologyWorld
from chaoslib.verdict import Verdict
from chaoslib.world import Producer, Tally

CAPABILITIES = ["echo", "noop"]
"""Builtin handlers whose slots live on different primaries of a 3-primary cluster (14438 and 10577)."""


def _victim_and_takeover(w: TopologyWorld) -> tuple[Any, Any]:
    """The primary to kill, and a predicate that is true once a replica serves in its place."""
    topology = w.topology
    if isinstance(topology, ClusterProcs):
        stream = w.keys(CAPABILITIES[0]).stream
        victim = topology.owner(stream)

        def cluster_took_over() -> bool:
            try:
                topology.wait_ok(timeout_s=0.5)
                return topology.owner(stream) is not victim
            except (RuntimeError, redis.RedisError):
                return False

        return victim, cluster_took_over
    victim = topology.primary

    def sentinel_took_over() -> bool:
        try:
            return topology.current_primary_port() != victim.port
        except redis.RedisError:
            return False

    return victim, sentinel_took_over


def _round(ctx: Ctx, kind: str, wait_replicas: int, tag: str) -> tuple[Tally, dict[str, Any], dict[str, bool]]:
    load_s = ctx.scale(2, 10)
    with TopologyWorld(tag, ctx.workdir, ctx.timers, ctx.seed, kind) as w:
        workers = [w.start_worker(f"f{i}", CAPABILITIES, concurrency=8) for i in range(2)]
        producers = [
            Producer(w, c, 10_000_000, batch=10, deadline_s=load_s * 2 + 90, pause_s=0.01, wait_replicas=wait_replicas)
            for c in CAPABILITIES
        ]
        for p in producers:
            p.start()
        time.sleep(load_s)
        victim, took_over = _victim_and_takeover(w)
        sent_before = sum(p.sent for p in producers)
        killed_at, killed_epoch = time.monotonic(), time.time()
        assert victim.proc is not None
        w.procs.kill(victim.proc)
        over = wait_for(took_over, 60, interval_s=0.1)
        takeover_s = time.monotonic() - killed_at
        back_at = time.time()
        shard_resumed_s = _shard_resumed_s(w, back_at) if kind == "cluster" and over else None
        resumed = wait_for(lambda: min((e.t for e in ledger.executions(w.exec_path) if e.t > back_at), default=0.0), 30)
        time.sleep(load_s)
        for p in producers:
            p.stop()
        tally, drain_s = w.wait_settled(CAPABILITIES, 120)
        figures = {
            "wait_replicas": wait_replicas,
            "acked_before_kill": sent_before,
            "acked_total": sum(p.sent for p in producers),
            "producer_errors": {k: v for p in producers for k, v in p.errors.items()},
            "takeover_s": round(takeover_s, 2),
            "work_resumed_after_takeover_s": round(resumed - back_at, 2) if resumed else None,
            "killed_shard_read_again_after_takeover_s": shard_resumed_s,
            "drain_s": round(drain_s, 2),
            "reclaimed_after_kill": _reclaims_after(w, killed_epoch),
            "lost": tally.lost,
            "duplicates": tally.duplicates,
            "submit_p50_ms": _p50_ms(producers),
        }
        flags = {
            "replica took over": bool(over),
            "workers alive (no restart)": all(p.poll() is None for p in workers),
            "no crash": not tracebacks(w),
            "drained": w.drained(CAPABILITIES),
        }
        return tally, figures, flags


def _shard_resumed_s(w: TopologyWorld, since: float) -> float | None:
    """Seconds from ``since`` until the workers read from the killed primary's capability again (its group's
    ``entries-read`` grows on the promoted replica), or None within 30 s. Any capability's first run after the
    takeover (``work_resumed_after_takeover_s``) may come from a shard that never went down."""
    c = w.client()  # made after the takeover: its slot map names the promoted replica
    stream = w.keys(CAPABILITIES[0]).stream
    seen: list[int] = []

    def read_more() -> bool:
        try:
            groups = c.xinfo_groups(stream)
        except redis.RedisError:
            return False
        seen.append(int(groups[0].get("entries-read") or 0) if groups else 0)
        return seen[-1] > seen[0]

    return round(time.time() - since, 2) if wait_for(read_more, 30, interval_s=0.02) else None


def _p50_ms(producers: list[Producer]) -> float | None:
    latencies = sorted(t for p in producers for t in p.latencies_s)
    return round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None


def _failover(ctx: Ctx, v: Verdict, kind: str, number: int) -> None:
    tally, figures, flags = _round(ctx, kind, 1, f"s{number}-wait1")
    v.tally = tally
    v.figures["wait_replicas=1"] = figures
    for name, ok in flags.items():
        v.check(name, ok, figures)
    v.check("0 acknowledged submits lost with wait_replicas=1", tally.lost == 0, f"{tally.lost} {tally.lost_sample}")
    v.timings = {"takeover_s": figures["takeover_s"], "drain_s": figures["drain_s"]}
    if not ctx.quick:
        tally0, figures0, flags0 = _round(ctx, kind, 0, f"s{number}-wait0")
        v.figures["wait_replicas=0"] = figures0
        for name, ok in flags0.items():
            v.check(f"{name} (wait_replicas=0)", ok, figures0)
        v.notes.append(f"without WAIT: {tally0.lost} acknowledged submits lost, {tally0.duplicates} duplicate runs")


def cluster_failover(ctx: Ctx, v: Verdict) -> None:
    _failover(ctx, v, "cluster", 17)


def sentinel_failover(ctx: Ctx, v: Verdict) -> None:
    _failover(ctx, v, "sentinel", 18)
