"""Fleet statistics: what waits, runs, is delayed or dead per capability, how fast it drains, which workers live.

``collect()`` returns data only (frozen dataclasses); the CLI renders it as a table or as JSON, and the exporter
reads its queue-level gauges from it: ``FleetStats`` is the one place those figures come from. The scaling
advice is a pure function (``advise``), documented with its limits in docs/stats.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dispatcher.store import readings as ops
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace
from dispatcher.store.readings import CapabilityReading, RedisInfo

DEFAULT_TARGET_AGE_S = 60.0
"""How soon the scaling advice wants the backlog drained, unless told otherwise."""


@dataclass(frozen=True, slots=True)
class Advice:
    """How many workers a capability needs, and on what the figure rests."""

    workers_needed: int
    basis: str
    """``measured`` (the per-worker rate of the last minute), ``no_rate`` (nothing completed yet: keep the live
    workers, at least one) or ``idle`` (nothing waits or runs)."""


@dataclass(frozen=True, slots=True)
class CapabilityStats:
    """The counters of one capability."""

    name: str
    waiting: int
    """Tasks in the stream not yet delivered to any worker."""
    running: int
    """Tasks delivered and not yet settled (the group's pending count)."""
    delayed: int
    """Tasks scheduled for later: retries in backoff and submits with ``delay_s``."""
    dead: int
    """Entries in the dead-letter stream."""
    workers: int
    """Live consumers of this capability (their heartbeat key exists)."""
    oldest_waiting_s: float | None
    """Age of the oldest waiting task (seconds since its submit, by Redis' clock), None when nothing waits."""
    open_circuits: int = 0
    """Live workers of this capability whose circuit for it is not closed (open or half-open): they pull none
    of its tasks, or one trial at a time."""
    stale_consumers: int = 0
    """Consumers in the group with no heartbeat (a dead worker the reaper has not handled yet)."""
    oldest_running_s: float | None = None
    """Seconds since the oldest running task was delivered, None when nothing runs."""
    paused: bool = False
    """Workers do not read this capability (``dispatcher pause``); submits are still accepted."""
    completed_1m: int = 0
    """Tasks completed over the last minute, fleet-wide."""
    waiting_admission: int = 0
    """Tasks with a priority or a fairness_key waiting for the admitter (docs/flow-control.md): not on the stream,
    so not in ``waiting`` (the stream's lag, which the admitter keeps at most ``flow_window``), but work that more
    workers would help with: the scaling advice counts it."""
    waiting_limit: int = 0
    """Tasks waiting for a rate limit (docs/flow-control.md): held back by a quota, so more workers do not help;
    not counted in the scaling advice."""
    waiting_key: int = 0
    """Tasks waiting for a permit of their concurrency key (its cap): more workers do not help either."""
    failed_1m: int = 0
    """Failed attempts over the last minute (retried or dead-lettered), fleet-wide."""
    throughput_window_s: float = 0.0
    """The seconds ``completed_1m`` and ``failed_1m`` cover (at most 60; less for a fleet that just started)."""
    drain_eta_s: float | None = None
    """Seconds to drain the waiting tasks at the last minute's completion rate; None when nothing completed."""
    workers_needed: int = 0
    """Workers (at their concurrency) that drain the backlog within the target age (see ``advise``)."""
    workers_needed_basis: str = "idle"

    @property
    def unserved(self) -> bool:
        """Every live worker of this capability has its circuit open: nothing runs its tasks normally."""
        return self.workers > 0 and self.open_circuits >= self.workers


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker from the registry, with whether any of its heartbeats is alive."""

    consumer: str
    host: str
    pid: int
    capabilities: tuple[str, ...]
    concurrency: int
    inflight: int
    circuits: dict[str, str]
    alive: bool
    last_seen: float
    """Epoch seconds (Redis' clock, as the worker sees it) of its last heartbeat."""
    version: str = ""
    started_at: float = 0.0
    """Epoch seconds the worker started (its own clock)."""
    heartbeat_age_s: float = 0.0
    """Seconds since its last heartbeat."""
    uptime_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over all capabilities; ``workers`` counts distinct live workers (one serving 3 capabilities: 1)."""

    waiting: int
    running: int
    delayed: int
    dead: int
    workers: int
    stale_consumers: int = 0
    completed_1m: int = 0
    failed_1m: int = 0
    oldest_waiting_s: float | None = None
    """The largest over the capabilities."""
    oldest_running_s: float | None = None
    paused: int = 0
    """How many capabilities are paused."""
    waiting_limit: int = 0
    """Tasks waiting for a rate limit, over all capabilities."""
    waiting_key: int = 0
    """Tasks waiting for a key's permit, over all capabilities."""
    waiting_admission: int = 0
    """Tasks with a priority waiting for admission, over all capabilities."""
    workers_needed: int = 0
    """The sum over capabilities: an upper bound, since one worker may serve several."""


@dataclass(frozen=True, slots=True)
class FleetStats:
    """A snapshot of the whole fleet, capabilities sorted by name, workers by consumer name."""

    capabilities: tuple[CapabilityStats, ...]
    totals: Totals
    workers: tuple[WorkerStats, ...]
    collected_at: float
    """Epoch seconds the snapshot describes (``now``, or the server's clock)."""
    redis: RedisInfo | None = None
    """The server's; on a cluster, the primary that fills first (``FleetReading.redis``)."""
    target_age_s: float = DEFAULT_TARGET_AGE_S
    known: tuple[str, ...] = ()
    """Every capability Redis knows (the snapshot covers fewer when asked for some only)."""
    redis_nodes: tuple[tuple[str, RedisInfo], ...] = ()
    """On a cluster, every primary's (``host:port``, info); empty on one server."""


def collect(
    gateway: Gateway,
    keyspace: KeySpace,
    now: float | None = None,
    *,
    capabilities: Sequence[str] | None = None,
    target_age_s: float = DEFAULT_TARGET_AGE_S,
) -> FleetStats:
    """Read the fleet's state: every capability in the capability set, every worker in the registry.

    At most three pipelined round trips whatever the fleet's size (see ``dispatcher.store.readings``).

    Args:
        gateway: where to send the commands.
        keyspace: the key space (prefix) of the fleet.
        now: epoch seconds to measure ages against; by default the Redis server's clock, which is the clock
            the entry ids were stamped with.
        capabilities: read only these (those Redis does not know are left out: compare with ``known``), and only
            the workers serving one of them; None for all.
        target_age_s: the scaling advice drains the backlog within this many seconds.

    Raises:
        RedisUnavailable: Redis could not be reached.
        RedisError: Redis answered with an unexpected error.
    """
    reading = gateway.run(ops.read_fleet(keyspace, capabilities))
    now_s = reading.server_time_ms / 1000 if now is None else now
    circuits = {w.consumer: w.circuits for w in reading.workers}
    concurrency = {w.consumer: w.concurrency for w in reading.workers}
    caps = tuple(_capability(r, now_s, circuits, concurrency, target_age_s) for r in reading.capabilities)
    workers = tuple(
        WorkerStats(
            consumer=w.consumer,
            host=w.host,
            pid=w.pid,
            capabilities=w.capabilities,
            concurrency=w.concurrency,
            inflight=w.inflight,
            circuits=dict(w.circuits),
            alive=reading.alive.get(w.consumer, False),
            last_seen=w.last_seen,
            version=w.version,
            started_at=w.started_at,
            heartbeat_age_s=max(now_s - w.last_seen, 0.0),
            uptime_s=max(now_s - w.started_at, 0.0),
        )
        for w in reading.workers
    )
    live = sum(1 for w in workers if w.alive)
    totals = _totals(caps, live)
    return FleetStats(caps, totals, workers, now_s, reading.redis, target_age_s, reading.known, reading.redis_nodes)


def advise(waiting: int, running: int, completed: int, window_s: float, live: int, target_age_s: float) -> Advice:
    """How many workers drain this capability's backlog (waiting + running) within ``target_age_s``.

    With throughput, each live worker is credited the rate the fleet measured over the last minute
    (``completed / window_s / live``), which already reflects its concurrency and its handlers' duration:
    ``ceil(backlog / (per-worker rate * target_age_s))``. Without it (nothing completed, or no live worker),
    the rate is unknown: keep the live workers, and at least one.
    """
    backlog = waiting + running
    if backlog == 0:
        return Advice(0, "idle")
    if completed <= 0 or live <= 0 or window_s <= 0:
        return Advice(max(live, 1), "no_rate")
    per_worker_s = completed / window_s / live
    return Advice(max(math.ceil(backlog / (per_worker_s * target_age_s) - 1e-9), 1), "measured")


def fair_waiting(r: CapabilityReading) -> int:
    """Tasks waiting in tenants' fair queues: what the index holds beyond the stream, the delayed, ready and
    limited sets (their sizes are read in the same round trip; a task between two of them in a script is never
    seen, scripts are atomic). Counted from the index since the queues are one key per tenant."""
    return max(r.indexed - r.length - r.delayed - r.ready - r.limited - r.keyed, 0)


def waiting_count(reading: CapabilityReading) -> int:
    """Entries not yet delivered: the group's ``lag`` when Redis knows it, else XLEN minus pending.

    ``lag`` is nil after a tombstone past the group's last-delivered-id (an undelivered entry was XDELed) and
    the group is absent before the first worker starts. Counting is exact there too, because settled entries
    are deleted from the stream: what remains is waiting or pending. Clamped at 0, since a pending entry whose
    stream entry was deleted still counts as pending.
    """
    group = reading.group
    if group is not None and group.lag is not None:
        return group.lag
    return max(reading.length - (group.pending if group else 0), 0)


def _capability(
    r: CapabilityReading,
    now_s: float,
    circuits: Mapping[str, Mapping[str, str]],
    concurrency: Mapping[str, int],
    target_age_s: float,
) -> CapabilityStats:
    age = None if r.oldest_waiting_ms is None else max(now_s - r.oldest_waiting_ms / 1000, 0.0)
    running_s = None if r.oldest_running_idle_ms is None else r.oldest_running_idle_ms / 1000
    open_circuits = sum(1 for c in r.live_consumers if circuits.get(c, {}).get(r.name, "closed") != "closed")
    waiting, running = waiting_count(r), r.group.pending if r.group else 0
    tput = r.throughput
    rate = tput.completed_per_s
    # Tenants' tasks the fair gate found held back by a limit or a key count there, not as admission (more
    # workers help neither); the gate's snapshot may be a pass old, so it is capped by what the queues hold.
    fair = fair_waiting(r)
    held_limit = min(r.fair_held_limit, fair)
    held_key = min(r.fair_held_key, fair - held_limit)
    admission = r.ready + fair - held_limit - held_key
    advice = advise(waiting + admission, running, tput.completed, tput.window_s, len(r.live_consumers), target_age_s)
    return CapabilityStats(
        name=r.name,
        waiting=waiting,
        running=running,
        delayed=r.delayed,
        dead=r.dead,
        workers=len(r.live_consumers),
        oldest_waiting_s=age,
        open_circuits=open_circuits,
        stale_consumers=len(r.stale_consumers),
        oldest_running_s=running_s,
        paused=r.paused,
        completed_1m=tput.completed,
        failed_1m=tput.failed,
        throughput_window_s=tput.window_s,
        drain_eta_s=(waiting + admission) / rate if rate > 0 else None,
        waiting_admission=admission,
        waiting_limit=r.limited + held_limit,
        waiting_key=r.keyed + held_key,
        workers_needed=advice.workers_needed,
        workers_needed_basis=advice.basis,
    )


def _most(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _totals(caps: Sequence[CapabilityStats], live_workers: int) -> Totals:
    return Totals(
        waiting=sum(c.waiting for c in caps),
        running=sum(c.running for c in caps),
        delayed=sum(c.delayed for c in caps),
        dead=sum(c.dead for c in caps),
        workers=live_workers,
        stale_consumers=sum(c.stale_consumers for c in caps),
        completed_1m=sum(c.completed_1m for c in caps),
        failed_1m=sum(c.failed_1m for c in caps),
        oldest_waiting_s=_most([c.oldest_waiting_s for c in caps]),
        oldest_running_s=_most([c.oldest_running_s for c in caps]),
        paused=sum(1 for c in caps if c.paused),
        workers_needed=sum(c.workers_needed for c in caps),
        waiting_admission=sum(c.waiting_admission for c in caps),
        waiting_limit=sum(c.waiting_limit for c in caps),
        waiting_key=sum(c.waiting_key for c in caps),
    )
