"""The worker's fetch loop: reads as many entries as it has free slots, from its capabilities in fair turn.

Pull balancing is the load balancer: a worker reads only as many entries as it has free slots right now, so a
slow or busy worker never holds tasks it has not started. After a start or any read error it first re-reads its
own pending entries (a lost XREADGROUP reply leaves entries there unseen), then reads new ones. A Redis outage
never ends the loop: it backs off, logs once, and reads again when Redis answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dispatcher.errors import DispatcherError, RedisUnavailable
from dispatcher.observe import metrics
from dispatcher.settings import Backoff
from dispatcher.store import pending, split_reads, streams
from dispatcher.store.codec import Fields
from dispatcher.store.gateway import AsyncGateway, Op
from dispatcher.store.keys import CapabilityKeys
from workers.breaker import Breaker
from workers.runner import Runner
from workers.slots import Phase, ReadPlanner, Slots

log = logging.getLogger(__name__)

OUTAGE_BACKOFF = Backoff(base_s=0.05, factor=2.0, max_s=1.0, jitter=0.0)
"""Pause between reads while Redis cannot be reached: 50 ms, doubling up to 1 s. One failed attempt a second is
no load on anyone, and a Redis that is back (restarted, or a replica promoted) is read from within a second: with
a 5 s cap, workers resumed 7.4-7.7 s after a 4 s cluster takeover (docs/scaling.md)."""
BURST_IDLE_S = 0.05
"""In burst mode, how long to wait for a slot to settle before looking again while tasks still run."""

Replies = list[tuple[str, list[tuple[str, Fields | None]]]]


class Reader:
    """Feeds a ``Runner`` from the capability streams until ``stopping`` is set (or, in burst mode, drained)."""

    def __init__(
        self,
        gateway: AsyncGateway,
        consumer: str,
        keys: Mapping[str, CapabilityKeys],
        slots: Slots,
        runner: Runner,
        breakers: Mapping[str, Breaker],
        *,
        block_ms: int,
        burst: bool,
        stopping: asyncio.Event,
        slot_free: asyncio.Event,
        settling: Callable[[], int],
        recorded: Callable[[], int],
        reconcile_s: float = 10.0,
        paused: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        self.gateway = gateway
        self.consumer = consumer
        self.keys = keys
        self._by_stream = {k.stream: k for k in keys.values()}
        self.slots = slots
        self.runner = runner
        self.breakers = breakers
        self.planner = ReadPlanner(tuple(keys))
        self.block_ms = block_ms
        self.burst = burst
        self._stopping = stopping
        self._slot_free = slot_free
        self._settling = settling
        self._recorded = recorded
        self._paused = paused
        """The capabilities paused now (``dispatcher pause``), as the heartbeat last read their flags."""
        self._recover = True
        self._block_turn = 0
        self.reconcile_s = reconcile_s
        self._next_reconcile = time.monotonic() + reconcile_s
        self.failures = 0
        """Reads failed in a row (0 while reads succeed): the worker's readiness reads it."""
        self._backoff_step = 0
        self._primaries: frozenset[str] = frozenset()
        self.last_error = ""

    async def run(self) -> None:
        """Read until stopped; in burst mode, until nothing is left to read, run or record."""
        while not self._stopping.is_set():
            try:
                done = await self._step()
            except DispatcherError as e:  # never a crash loop: back off, reconnect, re-read own pending
                metrics.REDIS_ERRORS.labels("read").inc()
                self.failures += 1
                self.last_error = str(e)
                if self.failures == 1:  # once per outage, not once per retry
                    level = logging.WARNING if isinstance(e, RedisUnavailable) else logging.ERROR
                    log.log(level, "read failed, retrying with backoff error=%s", e, extra={"consumer": self.consumer})
                await self._wait(OUTAGE_BACKOFF.delay_s(self._outage_step()))
                self._recover = True
                continue
            if self.failures:
                log.info("reading again after an outage consumer=%s", self.consumer, extra={"consumer": self.consumer})
                self.failures = 0
                self._backoff_step = 0
            if done:
                return

    def _outage_step(self) -> int:
        """The backoff step of this failed read: one more than the last, or the first again when the cluster
        client's slot map names other primaries than at the last failure (it re-read the map after a lost node
        and found a replica promoted: the next read is likely to succeed, so it is tried soon)."""
        primaries = self.gateway.primaries()
        moved = self._backoff_step > 0 and primaries != self._primaries
        self._primaries = primaries
        self._backoff_step = 1 if moved else self._backoff_step + 1
        return self._backoff_step

    async def _step(self) -> bool:
        """One turn of the loop; True when a burst worker has nothing left to do."""
        if time.monotonic() >= self._next_reconcile:
            await self.reconcile()
        free = self.slots.free
        if free <= 0:  # a full worker reads nothing, but still reconciles on time
            self._slot_free.clear()
            await self._wait(max(self._next_reconcile - time.monotonic(), 0.01), self._slot_free.wait())
            return False
        if self._recover:
            self._recover = not await self.recover_pending()
            return False
        recorded = self._recorded()
        got, drained = await self._read_once(free)
        if self.burst and not got:
            # Done only if nothing was recorded while the read was out: a retry recorded meanwhile re-added its
            # task after Redis had answered that read.
            if drained and not self.slots.held and not self._settling() and self._recorded() == recorded:
                return True
            self._slot_free.clear()
            await self._wait(BURST_IDLE_S, self._slot_free.wait())
        return False

    async def reconcile(self) -> None:
        """Compare this worker's slots with the entries Redis says its consumer holds, and mend both ways.

        Slots and Redis drift apart when Redis loses or regains state under a live worker (a group destroyed and
        recreated, a failover to a replica, a restart from an older snapshot): an entry Redis says this consumer
        holds that the worker does not know is re-read and run (or handed back); a running entry Redis no longer
        holds is abandoned (its result would be refused anyway) and its slot freed. The reaper cannot do either:
        it rightly leaves live consumers alone.
        """
        self._next_reconcile = time.monotonic() + self.reconcile_s
        names = list(self.keys)
        limit = max(self.slots.capacity * 2, 100)
        self.slots.watch()  # an entry settled while the listing is out is still in it, and is not unknown
        try:
            found = await self.gateway.run(pending.own([self.keys[c].stream for c in names], self.consumer, limit))
            unknown = sum(
                1
                for capability, ids in zip(names, found, strict=True)
                for entry_id in ids or ()
                if not self.slots.known((capability, entry_id))
            )
        finally:
            self.slots.unwatch()
        held = self.slots.held
        lost = 0
        for capability, ids in zip(names, found, strict=True):
            if ids is None:  # no group: the next read recreates it
                continue
            in_redis = set(ids)
            if len(ids) < limit:  # the whole list was read: what is not in it is not held
                gone = [k for k, slot in held.items() if k[0] == capability and slot.phase is Phase.RUNNING]
                lost += self.runner.abandon([k for k in gone if k[1] not in in_redis])
        if unknown:
            self._recover = True  # re-read this consumer's pending entries from 0: starts or hands back each
        if unknown or lost:
            log.warning(
                "slots mended against Redis consumer=%s unknown_pending=%d abandoned=%d", self.consumer, unknown, lost
            )

    async def _read_once(self, free: int) -> tuple[int, bool]:
        """One planned read; (handlers started or entries taken, whether every capability was found empty)."""
        paused = self._paused()
        allowance = {c: 0 if c in paused else b.allowance(free) for c, b in self.breakers.items()}
        read = self.planner.plan(free, allowance)
        if read is None:  # every circuit open or paused: wait for a trial, a success that closes one, or a stop
            wait_s = min((b.seconds_until_trial() for b in self.breakers.values()), default=0.1)
            self._slot_free.clear()
            await self._wait(max(wait_s, 0.05), self._slot_free.wait())
            return 0, True
        block_ms = self.block_ms if read.block and not self.burst else None
        streams_ = [self.keys[c].stream for c in read.capabilities]
        replies = await self.gateway.run(self._read(streams_, read.count, block_ms))
        got = self._take(replies)
        self.planner.done(read, got)
        covers_all = len(read.capabilities) == len(self.keys) or self.planner.round_empty
        return got, not got and covers_all

    def _take(self, replies: Replies) -> int:
        """Hand each read entry to the runner; entries beyond the free slots go straight back to the fleet."""
        count = 0
        paused = self._paused()
        for stream, entries in replies:
            keys = self._by_stream[stream]
            for entry_id, fields in entries:
                if self.slots.holds((keys.capability, entry_id)):
                    # Delivered again while its handler runs (the group was recreated at 0 under us): the run
                    # in progress settles it, since the entry is pending for this consumer again.
                    log.debug("entry delivered again while held capability=%s entry_id=%s", keys.capability, entry_id)
                    continue
                count += 1
                # Paused while this read was out (a blocking read started before the heartbeat saw the flag):
                # give it back as it was, so that no task of a paused capability starts after the pause is seen.
                if self.slots.free > 0 and keys.capability not in paused:
                    self.runner.start(keys, entry_id, fields)
                else:
                    self.runner.hand_back(keys, entry_id, fields)
        return count

    async def recover_pending(self) -> bool:
        """Re-read this consumer's own pending entries that it does not hold; True when none are left."""
        cursors = {k.stream: "0" for k in self.keys.values()}
        for _ in range(10_000):  # bounded: each round advances a cursor or ends
            if not cursors or self.slots.free <= 0:
                return not cursors
            wanted = list(cursors)
            after = [cursors[s] for s in wanted]
            # An entry whose outcome is recorded while this read is out may still be in its reply: not run again.
            self.slots.watch()
            try:
                replies = await self.gateway.run(self._read(wanted, self.slots.free, None, after))
                fresh: Replies = [
                    (s, [e for e in entries if not self.slots.known((self._by_stream[s].capability, e[0]))])
                    for s, entries in replies
                ]
            finally:
                self.slots.unwatch()
            seen = {stream for stream, entries in replies if entries}
            for stream, entries in replies:
                if entries:
                    cursors[stream] = entries[-1][0]
            self._take(fresh)
            cursors = {s: c for s, c in cursors.items() if s in seen}
        return True

    def _read(
        self, streams_: list[str], count: int, block_ms: int | None, after: list[str] | None = None
    ) -> Op[Replies]:
        """One read op: a single XREADGROUP over all ``streams_`` on one server; on a Redis Cluster, one per stream
        (``store/split_reads.py``), blocking on each stream in turn."""
        if not self.gateway.cluster or len(streams_) == 1:
            return streams.read(streams_, self.consumer, count, block_ms, after=after)
        self._block_turn += 1
        return split_reads.read(streams_, self.consumer, count, block_ms, after, block_on=self._block_turn)

    async def _wait(self, timeout_s: float, also: Awaitable[Any] | None = None) -> None:
        """Sleep ``timeout_s``, or less if stopped (or ``also`` completes) first."""
        waiters = [asyncio.ensure_future(self._stopping.wait())]
        if also is not None:
            waiters.append(asyncio.ensure_future(also))
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
