"""The one place where Redis key names are built.

Every key of a capability carries the hash tag ``{capability}``, so one capability's keys share one Redis
Cluster slot and every Lua script that touches them is slot-safe. Fleet-wide keys (capability set, worker
registry, reaper lease) carry no capability tag.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "workers"
"""The consumer group every worker of a capability reads through."""


@dataclass(frozen=True, slots=True)
class CapabilityKeys:
    """The keys of one capability."""

    capability: str
    stream: str
    """Stream of tasks waiting or running."""
    index: str
    """Hash: task id -> entry id (or a delayed record); the task's current place."""
    delayed: str
    """Sorted set: task id scored by the epoch ms when it is due."""
    ready: str
    """Sorted set: tasks with a priority waiting to be admitted onto the stream, by rank (docs/flow-control.md)."""
    limited: str
    """Sorted set: tasks that take units from rate limits, waiting for the admitter, by rank."""
    keyed: str
    """Sorted set: tasks with a concurrency key (and no rate limit), waiting for a permit of it, by rank."""
    dead: str
    """Stream of dead letters."""
    throughput: str
    """Hash: a ring of 5 s buckets of completed and failed counts, bumped by the settle, retry and bury scripts."""
    paused: str
    """String: exists while the capability is paused (workers stop reading it; submit still accepts)."""
    tenants: str
    """Sorted set: tenants (``fairness_key``) with tasks waiting, scored by virtual time (docs/flow-control.md)."""
    weights: str
    """Hash: tenant -> fairness weight (default 1; ``dispatcher limits set-weight``)."""
    caps: str
    """Hash: ``per_key`` -> the most tasks of one ``concurrency_key`` that run at once (``limits set-concurrency``)."""
    rejoin: str
    """Sorted set: tasks with a ``fairness_key`` back from a delay, a retry's backoff or the dead letters, by rank,
    until the fair gate moves each into its tenant's queue (``rejoin.lua``)."""
    fair_held: str
    """Hash: ``limit``/``key`` -> tenants' tasks the fair gate last found held back by a rate limit / a key's cap
    (a snapshot with an expiry, read by stats)."""
    result_prefix: str
    idempotency_prefix: str
    permits_prefix: str
    fair_prefix: str
    heartbeat_prefix: str
    channel_prefix: str

    @property
    def waiting_sets(self) -> tuple[str, str, str, str]:
        """The sets a task with a lane waits in again, in the order the scripts take them (``lanes.lua``): ready,
        limited, keyed, rejoin."""
        return self.ready, self.limited, self.keyed, self.rejoin

    def result(self, task_id: str) -> str:
        """Key of a task's result record."""
        return self.result_prefix + task_id

    def idempotency(self, key: str) -> str:
        """Key that remembers which task an idempotency key created."""
        return self.idempotency_prefix + key

    def permits(self, concurrency_key: str) -> str:
        """Sorted set of the task ids that hold a permit of ``concurrency_key`` (a permit is valid while its task is
        on the stream or running, its index value an entry id: docs/flow-control.md)."""
        return self.permits_prefix + concurrency_key

    def fair(self, tenant: str) -> str:
        """Sorted set of a tenant's waiting tasks, by rank."""
        return self.fair_prefix + tenant

    def heartbeat(self, consumer: str) -> str:
        """Expiring key that says a consumer of this capability is alive."""
        return self.heartbeat_prefix + consumer

    def channel(self, task_id: str) -> str:
        """Pub/sub channel on which a task's settlement is announced."""
        return self.channel_prefix + task_id


@dataclass(frozen=True, slots=True)
class LimitKeys:
    """The key of one named rate limit: a hash under its own hash tag ``{limit.<name>}``, since capabilities share
    it (docs/flow-control.md). Fields: ``rate_per_min``, ``burst`` (units), ``tat_ms`` (GCRA's theoretical arrival
    time, epoch ms by Redis' clock)."""

    name: str
    state: str


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds every key name under one prefix (default ``dispatcher``)."""

    prefix: str = "dispatcher"

    def capability(self, capability: str) -> CapabilityKeys:
        """The keys of ``capability``, all sharing the hash tag ``{capability}``."""
        base = f"{self.prefix}:{{{capability}}}:"
        return CapabilityKeys(
            capability=capability,
            stream=base + "stream",
            index=base + "tasks",
            delayed=base + "delayed",
            ready=base + "ready",
            limited=base + "limited",
            keyed=base + "keyed",
            dead=base + "dead",
            throughput=base + "tput",
            paused=base + "paused",
            tenants=base + "tenants",
            weights=base + "weights",
            caps=base + "caps",
            rejoin=base + "rejoin",
            fair_held=base + "fairheld",
            result_prefix=base + "result:",
            permits_prefix=base + "permits:",
            fair_prefix=base + "fair:",
            idempotency_prefix=base + "idem:",
            heartbeat_prefix=base + "hb:",
            channel_prefix=base + "done:",
        )

    def limit(self, name: str) -> LimitKeys:
        """The key of the rate limit ``name`` (a valid limit name: ``dispatcher.task.check_limit``)."""
        return LimitKeys(name, f"{self.prefix}:{{limit.{name}}}")

    @property
    def limits(self) -> str:
        """Set of every rate limit defined (``dispatcher limits set``)."""
        return f"{self.prefix}:limits"

    @property
    def pattern(self) -> str:
        """SCAN MATCH pattern of every key under this prefix (glob characters in the prefix escaped)."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}:*"

    @property
    def capabilities(self) -> str:
        """Set of every capability ever submitted to or served."""
        return f"{self.prefix}:capabilities"

    @property
    def workers(self) -> str:
        """Hash: consumer name -> worker record (msgpack), refreshed with each heartbeat."""
        return f"{self.prefix}:workers"

    @property
    def reaper_lease(self) -> str:
        """Lock (SET NX PX) held by the one reaper working this interval."""
        return f"{self.prefix}:reaper:lease"

    @property
    def admitter_lease(self) -> str:
        """Lock held by the one process admitting waiting tasks with a priority onto their streams."""
        return f"{self.prefix}:admitter:lease"

    @property
    def promoter_lease(self) -> str:
        """Lock held by the one worker moving due delayed tasks this interval."""
        return f"{self.prefix}:promoter:lease"
