"""Fleet statistics: what waits, runs, is delayed or dead per capability, and which workers are alive.

``collect()`` returns data only (frozen dataclasses); the CLI renders it as a table or as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dispatcher.store import readings as ops
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace
from dispatcher.store.readings import CapabilityReading


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
    oldest_waiting_age_s: float | None
    """Age of the oldest waiting task, None when nothing waits."""
    open_circuits: int = 0
    """Live workers of this capability whose circuit for it is not closed (open or half-open): they pull none
    of its tasks, or one trial at a time."""

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


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over all capabilities; ``workers`` counts distinct live workers (one serving 3 capabilities: 1)."""

    waiting: int
    running: int
    delayed: int
    dead: int
    workers: int


@dataclass(frozen=True, slots=True)
class FleetStats:
    """A snapshot of the whole fleet, capabilities sorted by name, workers by consumer name."""

    capabilities: tuple[CapabilityStats, ...]
    totals: Totals
    workers: tuple[WorkerStats, ...]
    collected_at: float
    """Epoch seconds the snapshot describes (``now``, or the server's clock)."""


def collect(gateway: Gateway, keyspace: KeySpace, now: float | None = None) -> FleetStats:
    """Read the fleet's state: every capability in the capability set, every worker in the registry.

    Two round trips whatever the fleet's size (a third, small one when some capability has waiting tasks,
    for their age).

    Args:
        gateway: where to send the commands.
        keyspace: the key space (prefix) of the fleet.
        now: epoch seconds to measure ages against; by default the Redis server's clock, which is the clock
            the entry ids were stamped with.

    Raises:
        RedisUnavailable: Redis could not be reached.
        RedisError: Redis answered with an unexpected error.
    """
    reading = gateway.run(ops.read_fleet(keyspace))
    now_s = reading.server_time_ms / 1000 if now is None else now
    circuits = {w.consumer: w.circuits for w in reading.workers}
    capabilities = tuple(_capability(r, now_s, circuits) for r in reading.capabilities)
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
        )
        for w in reading.workers
    )
    totals = Totals(
        waiting=sum(c.waiting for c in capabilities),
        running=sum(c.running for c in capabilities),
        delayed=sum(c.delayed for c in capabilities),
        dead=sum(c.dead for c in capabilities),
        workers=sum(1 for w in workers if w.alive),
    )
    return FleetStats(capabilities, totals, workers, now_s)


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


def _capability(r: CapabilityReading, now_s: float, circuits: Mapping[str, Mapping[str, str]]) -> CapabilityStats:
    age = None if r.oldest_waiting_ms is None else max(now_s - r.oldest_waiting_ms / 1000, 0.0)
    open_circuits = sum(1 for c in r.live_consumers if circuits.get(c, {}).get(r.name, "closed") != "closed")
    return CapabilityStats(
        name=r.name,
        waiting=waiting_count(r),
        running=r.group.pending if r.group else 0,
        delayed=r.delayed,
        dead=r.dead,
        workers=len(r.live_consumers),
        oldest_waiting_age_s=age,
        open_circuits=open_circuits,
    )
