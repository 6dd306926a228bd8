"""Every Prometheus metric of agent-dispatcher, in one place (prefix ``dispatcher_``, base units).

Labels come from bounded sets only: capability and outcome/reason, never task ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS = Counter(
    "dispatcher_tasks_total",
    "Task attempts finished by this worker, by outcome (succeeded, retried, dead).",
    ["capability", "outcome"],
)
TASK_SECONDS = Histogram(
    "dispatcher_task_duration_seconds",
    "Handler run time.",
    ["capability"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
INFLIGHT = Gauge("dispatcher_inflight_tasks", "Tasks whose handler is running in this worker.", ["capability"])
LEASE_LOST = Counter(
    "dispatcher_lease_lost_total",
    "Settlements refused because the entry had been given to another worker (late result discarded).",
    ["capability"],
)
DEAD_LETTERS = Counter("dispatcher_dead_letters_total", "Tasks dead-lettered, by reason.", ["capability", "reason"])
RECLAIMED = Counter(
    "dispatcher_reclaimed_total",
    "Entries the reaper gave back to the fleet, by why (dead_worker, hung, poison, deleted).",
    ["capability", "why"],
)
CIRCUIT_OPEN = Gauge(
    "dispatcher_circuit_open", "1 while this worker's circuit for a capability is open.", ["capability"]
)
REDIS_ERRORS = Counter("dispatcher_redis_errors_total", "Redis errors seen by this worker, by operation.", ["op"])


class CapabilityMetrics:
    """The per-task metrics of one capability, bound to their labels once (``labels()`` costs a lock and a
    dict lookup: too much to pay several times per task on the hot path)."""

    __slots__ = ("inflight", "outcomes", "seconds")

    def __init__(self, capability: str) -> None:
        self.inflight = INFLIGHT.labels(capability)
        self.seconds = TASK_SECONDS.labels(capability)
        self.outcomes = {o: TASKS.labels(capability, o) for o in ("succeeded", "retried", "dead")}
