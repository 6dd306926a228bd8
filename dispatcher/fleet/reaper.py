"""The reaper: gives the tasks of dead workers (and of hung handlers) back to the fleet.

For each capability it finds consumers whose heartbeat is gone and re-adds each of their pending tasks as a
fresh entry (attempt + 1, reclaims + 1), or dead-letters it as ``poison`` once it has been delivered
``max_deliveries`` times without settling. Each step is one script that re-checks, atomically, that the
owner still holds the entry and that its heartbeat is still gone: a slow but live worker keeps its task.
Large pending lists are paged with a cursor; a pass does a bounded amount of work.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from dispatcher.errors import DecodeError
from dispatcher.faults import Faults
from dispatcher.fleet import decide
from dispatcher.observe import metrics
from dispatcher.settings import Settings
from dispatcher.store import codec, liveness, streams, transitions
from dispatcher.store import pending as ops
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.transitions import Release, Transition
from dispatcher.store.wire import Applied

log = logging.getLogger(__name__)

PAGE = 200
"""Pending entries handled per round trip."""
PAGES_PER_PASS = 500
"""Upper bound of pages per capability per pass (100k entries), so one pass never runs away."""


@dataclass(slots=True)
class ReapReport:
    """What one pass did, by capability-independent counters."""

    reclaimed: int = 0
    poison: int = 0
    hung: int = 0
    deleted: int = 0
    forgotten: int = 0
    skipped_after_restart: bool = False
    by_capability: Counter[str] = field(default_factory=Counter)


class Reaper:
    """One reaper pass at a time over every known capability (see module docstring)."""

    def __init__(self, gateway: Gateway, settings: Settings, faults: Faults | None = None) -> None:
        self.gateway = gateway
        self.faults = faults or Faults()
        self.settings = settings
        self.keyspace = KeySpace(settings.prefix)
        self._hung_cursor: dict[str, str] = {}

    def run_once(self) -> ReapReport:
        """One pass over every capability."""
        report = ReapReport()
        # After a Redis restart every heartbeat may be gone although the workers live: give them one TTL to
        # beat again before treating anyone as dead (no reclaim storm after an outage).
        if self.gateway.run(liveness.uptime_s()) < self.settings.heartbeat_ttl_s * 1.5:
            report.skipped_after_restart = True
            return report
        for name in self.gateway.run(streams.known_capabilities(self.keyspace.capabilities)):
            self.reap(self.keyspace.capability(name), report)
        self._prune_registry()
        return report

    def reap(self, keys: CapabilityKeys, report: ReapReport) -> None:
        """Reclaim the entries of dead consumers of one capability, forget the empty ones, check for hung."""
        found = self.gateway.run(ops.consumers(keys))
        alive = self.gateway.run(liveness.alive([keys.heartbeat(c.name) for c in found]))
        for consumer, is_alive in zip(found, alive, strict=True):
            if is_alive:
                continue
            if consumer.pending:
                self._reclaim_consumer(keys, consumer.name, report)
            if self.gateway.run(ops.forget(keys, consumer.name)):
                report.forgotten += 1
        self._reclaim_hung(keys, {c.name for c, a in zip(found, alive, strict=True) if a}, report)

    def _reclaim_consumer(self, keys: CapabilityKeys, owner: str, report: ReapReport) -> None:
        after = "-"
        for _ in range(PAGES_PER_PASS):
            page = self.gateway.run(ops.pending_page(keys, after, PAGE, owner))
            if not page:
                return
            self._reclaim(keys, page, report, owner_dead=True)
            after = page[-1].entry_id

    def _reclaim_hung(self, keys: CapabilityKeys, live: set[str], report: ReapReport) -> None:
        """Entries of live consumers idle past their task's timeout_s plus a grace (a stuck handler).

        One page per pass, continuing from a cursor, so even a huge pending list costs one bounded call.
        """
        after = self._hung_cursor.get(keys.capability, "-")
        page = self.gateway.run(ops.pending_page(keys, after, PAGE))
        self._hung_cursor[keys.capability] = page[-1].entry_id if len(page) == PAGE else "-"
        # The worker enforces timeout_s itself; an entry idle a heartbeat TTL past it has a stuck worker loop.
        grace_ms = self.settings.heartbeat_ttl_s * 1000
        candidates = [p for p in page if p.consumer in live and p.idle_ms > grace_ms]
        if not candidates:
            return
        fields = self.gateway.run(ops.entries(keys, [p.entry_id for p in candidates]))
        hung = []
        for entry, raw in zip(candidates, fields, strict=True):
            if raw is None:
                continue
            try:
                timeout_s = codec.decode_entry(keys.capability, entry.entry_id, raw, self._max_bytes).task.timeout_s
            except DecodeError:
                continue  # its worker dead-letters it when it reads it
            if timeout_s is not None and entry.idle_ms > timeout_s * 1000 + grace_ms:
                hung.append(entry)
        if hung:
            self._reclaim(keys, hung, report, owner_dead=False)

    @property
    def _max_bytes(self) -> int:
        return self.settings.max_payload_bytes

    def _reclaim(
        self, keys: CapabilityKeys, page: list[ops.PendingEntry], report: ReapReport, owner_dead: bool
    ) -> None:
        fields = self.gateway.run(ops.entries(keys, [p.entry_id for p in page]))
        self.faults.reach("after_reclaim_read")
        kinds = [self._decide(keys, entry, raw, owner_dead) for entry, raw in zip(page, fields, strict=True)]
        replies = self.gateway.run(transitions.record([t for t, _ in kinds]))
        for (transition, kind), reply in zip(kinds, replies, strict=True):
            if isinstance(reply, Exception):
                log.error("reclaim failed capability=%s error=%s", keys.capability, reply)
            elif reply is Applied.DONE:
                metrics.RECLAIMED.labels(keys.capability, metrics.RECLAIM_REASONS[kind]).inc()
                report.by_capability[keys.capability] += 1
                setattr(report, kind, getattr(report, kind) + 1)
                if kind == "poison":
                    metrics.DEAD_LETTERS.labels(keys.capability, "poison").inc()
                    log.warning(
                        "dead letter capability=%s task_id=%s entry_id=%s reason=poison",
                        keys.capability,
                        getattr(transition, "task_id", "") or "-",
                        transition.entry_id,
                    )
        if report.by_capability[keys.capability]:
            log.info("reclaimed capability=%s count=%d", keys.capability, report.by_capability[keys.capability])

    def _decide(
        self, keys: CapabilityKeys, entry: ops.PendingEntry, raw: dict[bytes, bytes] | None, owner_dead: bool
    ) -> tuple[Transition, str]:
        """The transition for one pending entry, and its kind for the report (reclaimed, hung, poison, deleted)."""
        if raw is None:  # deleted from the stream: nothing to run; release the PEL entry
            return Release(keys, entry.entry_id), "deleted"
        ctx = decide.Context(self.settings, entry.consumer)
        try:
            delivery = codec.decode_entry(keys.capability, entry.entry_id, raw, self._max_bytes)
        except DecodeError as e:
            return decide.undecodable(ctx, keys, entry.entry_id, raw, e, owner_dead).transition, "poison"
        if delivery.reclaims + 1 >= self.settings.max_deliveries:
            error = RuntimeError(f"delivered {delivery.reclaims + 1} times without settling (worker lost each time)")
            return decide.dead(ctx, keys, delivery, "poison", error, owner_dead).transition, "poison"
        decision = decide.reclaim(ctx, keys, delivery, owner_dead)
        return decision.transition, decision.outcome

    def _prune_registry(self) -> None:
        """Remove the registry records of workers none of whose heartbeat keys exists (Redis says so: no clock of a
        worker or of this process decides it), and records that do not decode."""
        stale: list[str] = []
        probes: list[tuple[str, str]] = []
        for consumer, raw in self.gateway.run(liveness.registry(self.keyspace.workers)).items():
            try:
                record = codec.decode_worker(raw)
            except DecodeError:
                stale.append(consumer)
                continue
            probes += [(consumer, self.keyspace.capability(c).heartbeat(consumer)) for c in record.capabilities]
        beating = self.gateway.run(liveness.alive([key for _, key in probes]))
        alive = {consumer for (consumer, _), up in zip(probes, beating, strict=True) if up}
        stale += sorted({consumer for consumer, _ in probes} - alive)
        self.gateway.run(liveness.prune_registry(self.keyspace.workers, stale))
