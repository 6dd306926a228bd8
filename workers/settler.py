"""The settler: sends finished tasks' transitions to Redis in batches, one round trip per batch.

A transition is only forgotten once Redis has taken it (or refused it for good): during an outage the batch
waits and is sent again after reconnecting, so a task is never reported done that was not recorded. If the
worker dies meanwhile, the reaper gives its entries to another worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from dispatcher.errors import DispatcherError, RedisFull, RedisUnavailable
from dispatcher.observe import metrics
from dispatcher.store import transitions
from dispatcher.store.gateway import AsyncGateway
from dispatcher.store.transitions import Transition
from dispatcher.store.wire import Applied

log = logging.getLogger(__name__)

BATCH = 500
RETRY_MAX_S = 1.0
"""Longest pause before sending a batch again that Redis could not take or refused: 50 ms doubling to 1 s, the
reads' cap too (``reader.OUTAGE_BACKOFF``). A slot is held until its outcome is recorded, so while the settler
waits a full worker reads nothing: with 2 s, a worker could resume up to 2 s after a Redis came back."""
MAX_ATTEMPTS = 5
"""Sends of one transition refused by Redis with an error other than unavailable/full, before it is dropped
(its entry stays pending and is recovered like a dead worker's)."""


class Settler:
    """Batches transitions; ``on_settled(transitions)`` is called with those recorded (or given up) in a batch."""

    def __init__(self, gateway: AsyncGateway, on_settled: Callable[[Sequence[Transition]], None]) -> None:
        self._gateway = gateway
        self._on_settled = on_settled
        self._queue: list[Transition] = []
        self._refused: dict[int, int] = {}  # id() of a queued transition -> times Redis refused it
        self.recorded = 0
        """Transitions recorded (or given up) so far."""
        self._wake = asyncio.Event()
        self._closing = False

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, transition: Transition) -> None:
        """Queue a transition for the next batch."""
        self._queue.append(transition)
        self._wake.set()

    async def run(self) -> None:
        """Send batches until ``close()`` and the queue is empty."""
        delay_s = 0.05
        while not (self._closing and not self._queue):
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._queue[:BATCH]
            try:
                replies = await self._gateway.run(transitions.record(batch))
            except RedisUnavailable as e:
                metrics.REDIS_ERRORS.labels("settle").inc()
                if delay_s == 0.05:  # the first failure of an outage; the backoff grows from there
                    log.warning("settle delayed: redis unavailable pending=%d error=%s", len(self._queue), e)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)
                continue
            except Exception:  # e.g. MemoryError mid-read: if settling died, the worker would run on, unrecorded
                log.exception("settle failed unexpectedly, retrying pending=%d", len(self._queue))
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)
                continue
            del self._queue[: len(batch)]
            if all(reply is Applied.DONE for reply in replies):  # the common case, first
                self.recorded += len(batch)
                self._on_settled(batch)
                delay_s = 0.05
                continue
            requeued = [self._handle(item, reply) for item, reply in zip(batch, replies, strict=True)]
            if any(requeued):  # Redis refused some (full, or a passing error): back off before resending
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)
            else:
                delay_s = 0.05

    def _handle(self, t: Transition, reply: Applied | Exception) -> bool:
        """Act on one reply; True when the transition was queued again."""
        if reply is Applied.DONE:
            self.recorded += 1
            self._on_settled((t,))
            return False
        attempts = self._refused.pop(id(t), 0) + 1
        transient = isinstance(reply, RedisFull | RedisUnavailable)
        if isinstance(reply, DispatcherError) and (transient or attempts < MAX_ATTEMPTS):
            self._refused[id(t)] = attempts  # the queue holds it, so its id stays its own
            self._queue.append(t)
            return True
        if isinstance(reply, Exception):
            log.error("settle failed capability=%s entry_id=%s error=%s", t.keys.capability, t.entry_id, reply)
        elif reply is Applied.LEASE_LOST:
            metrics.LEASES_LOST.labels(t.keys.capability).inc()
            log.warning(
                "lease lost, late result discarded capability=%s task_id=%s entry_id=%s reason=the entry is no longer "
                "pending for this consumer (reclaimed by the reaper after a missed heartbeat, or lost by Redis)",
                t.keys.capability,
                getattr(t, "task_id", "-"),
                t.entry_id,
            )
        self.recorded += 1
        self._on_settled((t,))
        return False

    def close(self) -> None:
        """Finish once the queue is empty."""
        self._closing = True
        self._wake.set()
