"""Every Prometheus metric of agent-dispatcher, in one place (prefix ``dispatcher_``, base units).

Labels come from bounded sets only: capability, outcome, reason and operation, never task ids or hostnames.
docs/operations.md lists each metric with its type, labels and meaning.

The per-task metrics (starts, outcomes, run time, queue wait, tasks in progress) cost a few integer additions on
the worker's hot path: ``CapabilityMetrics`` keeps plain counters, and one collector turns them into metric
families when ``/metrics`` is scraped. prometheus-client's own ``Counter``/``Histogram`` take a lock per update,
several times per task, which profiling showed among the worker's largest costs. Rare events use
prometheus-client's objects.

The queue-level gauges of ``dispatcher exporter`` are read from Redis at scrape time by ``FleetCollector``
(``dispatcher.observe.exporter`` serves them): one row of ``CAPABILITY_GAUGES`` or ``FLEET_GAUGES`` each.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatcher.errors import DispatcherError

if TYPE_CHECKING:  # types only: the worker's hot path need not import the stats module
    from dispatcher.fleet.stats import CapabilityStats, FleetStats

log = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "retried", "dead", "rate_limited")
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Queue waits: the run-time buckets, and up to an hour (a backlog waits longer than one task runs)."""

RECLAIM_REASONS = {"reclaimed": "dead_worker", "hung": "hung", "poison": "poison", "deleted": "deleted"}
"""The reaper's kinds of reclaim -> the ``reason`` label of ``dispatcher_tasks_reclaimed_total``."""

LEASES_LOST = Counter(
    "dispatcher_leases_lost_total",
    "Settlements refused because the entry had been given to another worker (late result discarded).",
    ["capability"],
)
DEAD_LETTERS = Counter(
    "dispatcher_dead_letters_total", "Tasks this process dead-lettered, by reason.", ["capability", "reason"]
)
RECLAIMED = Counter(
    "dispatcher_tasks_reclaimed_total",
    "Entries this process's reaper gave back to the fleet or buried, by reason (dead_worker, hung, poison, deleted).",
    ["capability", "reason"],
)
CIRCUIT_OPEN = Gauge(
    "dispatcher_circuit_open", "1 while this worker's circuit for a capability is open.", ["capability"]
)
REDIS_ERRORS = Counter("dispatcher_redis_errors_total", "Redis errors seen by this worker, by operation.", ["op"])
WORKER_CONCURRENCY = Gauge(
    "dispatcher_worker_concurrency", "Tasks this worker process holds at most at once (its slots)."
)
LAST_HEARTBEAT = Gauge(
    "dispatcher_worker_last_heartbeat_timestamp_seconds",
    "When this worker last refreshed its heartbeat, in epoch seconds by Redis' clock (0 before the first beat).",
)


class Histogram:
    """Bucket counts and a sum, updated without a lock (the event loop is the only writer)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value_s: float) -> None:
        self.counts[bisect_left(self.bounds, value_s)] += 1
        self.total += value_s

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class CapabilityMetrics:
    """The per-task metrics of one capability in this process (one object per capability, shared)."""

    __slots__ = ("capability", "inflight", "outcomes", "seconds", "started", "waited")

    def __init__(self, capability: str) -> None:
        self.capability = capability
        self.started = 0
        self.inflight = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.seconds = Histogram()
        self.waited = Histogram(WAIT_BUCKETS_S)


_BY_CAPABILITY: dict[str, CapabilityMetrics] = {}


def for_capability(capability: str) -> CapabilityMetrics:
    """The process-wide per-task metrics of ``capability`` (made on first use)."""
    found = _BY_CAPABILITY.get(capability)
    if found is None:
        found = _BY_CAPABILITY[capability] = CapabilityMetrics(capability)
    return found


class TaskCollector(Collector):
    """Serves the per-task metrics of every capability from their plain counters, at scrape time."""

    def describe(self) -> list[Metric]:
        """The families ``collect`` yields (empty), for listing what is defined."""
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        started, completed, inflight, seconds, waited = self._families()
        for m in list(_BY_CAPABILITY.values()):
            started.add_metric([m.capability], m.started)
            for outcome, count in m.outcomes.items():
                completed.add_metric([m.capability, outcome], count)
            inflight.add_metric([m.capability], m.inflight)
            seconds.add_metric([m.capability], m.seconds.cumulative(), m.seconds.total)
            waited.add_metric([m.capability], m.waited.cumulative(), m.waited.total)
        yield from (started, completed, inflight, seconds, waited)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, HistogramMetricFamily
    ]:
        started = CounterMetricFamily(
            "dispatcher_tasks_started", "Task attempts whose handler this worker started.", labels=["capability"]
        )
        completed = CounterMetricFamily(
            "dispatcher_tasks_completed",
            "Task attempts finished by this worker, by outcome (succeeded, retried, dead).",
            labels=["capability", "outcome"],
        )
        inflight = GaugeMetricFamily(
            "dispatcher_tasks_in_progress", "Tasks whose handler is running in this worker.", labels=["capability"]
        )
        seconds = HistogramMetricFamily(
            "dispatcher_task_duration_seconds", "Handler run time, in seconds.", labels=["capability"]
        )
        waited = HistogramMetricFamily(
            "dispatcher_task_queue_wait_seconds",
            "Time from a task's entry into its stream (its submit, or when a delay or backoff ended) to its start "
            "here, by Redis' clock, in seconds.",
            labels=["capability"],
        )
        return started, completed, inflight, seconds, waited


TASK_COLLECTOR = TaskCollector()
REGISTRY.register(TASK_COLLECTOR)


# --- the exporter's queue-level gauges, read from Redis at scrape time ---------------------------------------


@dataclass(frozen=True, slots=True)
class CapabilityGauge:
    """One per-capability gauge of the exporter: its name, help and how to read it from a capability's stats.

    Rows of one name (``dispatcher_consumers`` with ``state`` alive and stale) make one family; ``labels`` are the
    row's fixed labels beside ``capability``."""

    name: str
    help: str
    value: Callable[[CapabilityStats], float]
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FleetGauge:
    """One fleet-wide gauge of the exporter (no labels), read from the whole snapshot."""

    name: str
    help: str
    value: Callable[[FleetStats], float | None]
    """None: not known in this snapshot (the gauge is left out)."""


CAPABILITY_GAUGES: tuple[CapabilityGauge, ...] = (
    CapabilityGauge(
        "dispatcher_tasks_waiting", "Tasks in the stream not yet delivered to a worker.", lambda c: c.waiting
    ),
    CapabilityGauge(
        "dispatcher_tasks_waiting_admission",
        "Tasks with a priority waiting for admission onto the stream (not in the stream's lag).",
        lambda c: c.waiting_admission,
    ),
    CapabilityGauge(
        "dispatcher_tasks_waiting_limit",
        "Tasks waiting for a rate limit: held back by a quota, more workers do not help.",
        lambda c: c.waiting_limit,
    ),
    CapabilityGauge(
        "dispatcher_tasks_waiting_key",
        "Tasks waiting for a permit of their concurrency key: held back by its cap, more workers do not help.",
        lambda c: c.waiting_key,
    ),
    CapabilityGauge("dispatcher_tasks_running", "Tasks delivered and not yet settled.", lambda c: c.running),
    CapabilityGauge(
        "dispatcher_tasks_delayed", "Tasks scheduled for later (delay_s, retry backoff).", lambda c: c.delayed
    ),
    CapabilityGauge("dispatcher_dead_letters", "Entries in the dead-letter stream.", lambda c: c.dead),
    CapabilityGauge(
        "dispatcher_oldest_waiting_task_age_seconds",
        "Age of the oldest waiting task by Redis' clock, in seconds (0 when none waits).",
        lambda c: c.oldest_waiting_s or 0.0,
    ),
    CapabilityGauge(
        "dispatcher_oldest_running_task_age_seconds",
        "Idle time of the oldest running (delivered, unsettled) task, in seconds (0 when none runs).",
        lambda c: c.oldest_running_s or 0.0,
    ),
    CapabilityGauge(
        "dispatcher_consumers",
        "Consumers of the capability's group by state (alive: heartbeat fresh; stale: in the group, no heartbeat).",
        lambda c: c.workers,
        (("state", "alive"),),
    ),
    CapabilityGauge("dispatcher_consumers", "", lambda c: c.stale_consumers, (("state", "stale"),)),
    CapabilityGauge(
        "dispatcher_workers_needed",
        "Workers (at their concurrency) that would drain the backlog within the target age, from the measured rate.",
        lambda c: c.workers_needed,
    ),
    CapabilityGauge(
        "dispatcher_paused", "1 when the capability is paused (workers do not read it).", lambda c: c.paused
    ),
    CapabilityGauge(
        "dispatcher_tasks_completed_1m", "Tasks completed over the last minute, fleet-wide.", lambda c: c.completed_1m
    ),
    CapabilityGauge(
        "dispatcher_tasks_failed_1m",
        "Failed attempts (retries, reclaims, dead letters) over the last minute, fleet-wide.",
        lambda c: c.failed_1m,
    ),
)
"""Name -> help -> getter of each per-capability gauge: a new field of ``CapabilityStats`` is one more row."""

FLEET_GAUGES: tuple[FleetGauge, ...] = (
    FleetGauge(
        "dispatcher_workers",
        "Distinct live workers (one serving 3 capabilities counts once).",
        lambda s: s.totals.workers,
    ),
    FleetGauge(
        "dispatcher_redis_used_memory_bytes",
        "Redis INFO used_memory, in bytes.",
        lambda s: None if s.redis is None else s.redis.used_memory,
    ),
    FleetGauge(
        "dispatcher_redis_maxmemory_bytes",
        "Redis maxmemory, in bytes (0: no limit).",
        lambda s: None if s.redis is None else s.redis.maxmemory,
    ),
)
"""Name -> help -> getter of each fleet-wide gauge: a new field of ``FleetStats`` is one more row."""


REDIS_UP = "dispatcher_redis_up"
COLLECT_SECONDS = "dispatcher_exporter_collect_seconds"


def exporter_metric_names() -> frozenset[str]:
    """Every metric name the exporter can serve (the gauges of both tables and its own two)."""
    return frozenset({g.name for g in CAPABILITY_GAUGES} | {g.name for g in FLEET_GAUGES} | {REDIS_UP, COLLECT_SECONDS})


class FleetCollector(Collector):
    """The exporter's gauges, read from Redis by ``read`` at each scrape; ``dispatcher_redis_up`` 0 (and no queue
    gauges) when it fails, so a scrape always answers. ``read`` bounds its own time (its client's socket timeouts).
    """

    def __init__(self, read: Callable[[], FleetStats]) -> None:
        self._read = read
        self._down = False

    def describe(self) -> list[Metric]:
        """Nothing: the families depend on what Redis holds (the registry then never scrapes at registration)."""
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            stats: FleetStats | None = self._read()
        except DispatcherError as e:
            stats = None
            if not self._down:  # once per outage
                log.warning("exporter: Redis unavailable, serving dispatcher_redis_up 0 error=%s", e)
        else:
            if self._down:
                log.warning("exporter: Redis answers again")
        self._down = stats is None
        yield GaugeMetricFamily(REDIS_UP, "1 when the last read of Redis succeeded.", value=int(stats is not None))
        if stats is not None:
            yield from _fleet_families(stats)
        yield GaugeMetricFamily(
            COLLECT_SECONDS,
            "How long this scrape's read of Redis took, in seconds.",
            value=time.perf_counter() - started,
        )


def _fleet_families(stats: FleetStats) -> Iterator[Metric]:
    families: dict[str, GaugeMetricFamily] = {}
    for row in CAPABILITY_GAUGES:
        labels = ["capability", *(k for k, _ in row.labels)]
        family = families.setdefault(row.name, GaugeMetricFamily(row.name, row.help, labels=labels))
        for c in stats.capabilities:
            family.add_metric([c.name, *(v for _, v in row.labels)], row.value(c))
    yield from families.values()
    for fleet in FLEET_GAUGES:
        value = fleet.value(stats)
        if value is not None:
            yield GaugeMetricFamily(fleet.name, fleet.help, value=value)
