"""Every Prometheus metric of agent-dispatcher, in one place (prefix ``dispatcher_``, base units).

Labels come from bounded sets only: capability and outcome/reason, never task ids.

The per-task metrics (outcomes, run time, tasks in progress) cost a few integer additions on the worker's hot
path: ``CapabilityMetrics`` keeps plain counters, and one collector turns them into metric families when
``/metrics`` is scraped. prometheus-client's own ``Counter``/``Histogram`` take a lock per update, several times
per task, which profiling showed among the worker's largest costs. Rare events use prometheus-client's objects.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

OUTCOMES = ("succeeded", "retried", "dead")
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

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


class Histogram:
    """Bucket counts and a sum, updated without a lock (the event loop is the only writer)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS_S) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value_s: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS_S, value_s)] += 1
        self.total += value_s

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*DURATION_BUCKETS_S, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class CapabilityMetrics:
    """The per-task metrics of one capability in this process (one object per capability, shared)."""

    __slots__ = ("capability", "inflight", "outcomes", "seconds")

    def __init__(self, capability: str) -> None:
        self.capability = capability
        self.inflight = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.seconds = Histogram()


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
        tasks, inflight, seconds = self._families()
        for m in list(_BY_CAPABILITY.values()):
            for outcome, count in m.outcomes.items():
                tasks.add_metric([m.capability, outcome], count)
            inflight.add_metric([m.capability], m.inflight)
            seconds.add_metric([m.capability], m.seconds.cumulative(), m.seconds.total)
        yield from (tasks, inflight, seconds)

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily]:
        tasks = CounterMetricFamily(
            "dispatcher_tasks",
            "Task attempts finished by this worker, by outcome (succeeded, retried, dead).",
            labels=["capability", "outcome"],
        )
        inflight = GaugeMetricFamily(
            "dispatcher_inflight_tasks", "Tasks whose handler is running in this worker.", labels=["capability"]
        )
        seconds = HistogramMetricFamily("dispatcher_task_duration_seconds", "Handler run time.", labels=["capability"])
        return tasks, inflight, seconds


TASK_COLLECTOR = TaskCollector()
REGISTRY.register(TASK_COLLECTOR)
