"""The worker runtime: pulls tasks for its capabilities, runs their handlers, records their outcomes.

Pull balancing is the load balancer: the worker reads only as many entries as it has free slots right now,
so a slow or busy worker never holds tasks it has not started. After any reconnect it first re-reads its
own pending entries (a lost XREADGROUP reply leaves entries there unseen), then reads new ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import redis.asyncio

from dispatcher import __version__
from dispatcher.errors import ConfigError, DecodeError, DispatcherError, HandlerTimeout, RedisUnavailable, Reject
from dispatcher.errors import Retry as RetrySignal
from dispatcher.faults import Faults
from dispatcher.fleet import decide
from dispatcher.fleet.upkeep import Upkeep
from dispatcher.observe import metrics
from dispatcher.settings import Settings
from dispatcher.store import codec, streams
from dispatcher.store.codec import Delivery, WorkerRecord
from dispatcher.store.connection import make_async_client
from dispatcher.store.gateway import AsyncGateway
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.transitions import Release
from workers.breaker import Breaker
from workers.executor import Executor
from workers.heartbeat import Heartbeat
from workers.registry import Registry
from workers.settler import Settler

log = logging.getLogger(__name__)


Held = tuple[str, str]
"""(capability, entry id): what identifies an entry this worker holds."""


def consumer_name() -> str:
    """A unique, readable consumer name: host-pid-random."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Serves ``capabilities`` with handlers from ``registry`` until ``stop()`` (or, in burst mode, until
    nothing is left to read).

    Args:
        registry: where the handlers come from.
        capabilities: the capabilities to serve; each must have a handler.
        settings: shared settings.
        concurrency: the most tasks run at once (thread pool size and async bound alike).
        name: the consumer name (default host-pid-random).
        burst: drain what is there, then return.
        upkeep: also run the fleet upkeep (delayed-task mover and reaper, each under a fleet-wide lease).
        client: an injected asyncio Redis client.
    """

    def __init__(
        self,
        registry: Registry,
        capabilities: Sequence[str],
        settings: Settings,
        *,
        concurrency: int = 10,
        name: str | None = None,
        burst: bool = False,
        upkeep: bool = True,
        client: redis.asyncio.Redis | None = None,
    ) -> None:
        missing = [c for c in capabilities if registry.get(c) is None]
        if missing or not capabilities:
            raise ConfigError(f"no handler for capabilities {missing}; found {registry.capabilities()}")
        if concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        self.settings = settings
        self.registry = registry
        self.capabilities = list(dict.fromkeys(capabilities))
        self.concurrency = concurrency
        self.name = name or consumer_name()
        self.burst = burst
        self.faults = Faults.from_env()
        self.upkeep = Upkeep(settings, self.name, faults=self.faults) if upkeep else None
        self.keyspace = KeySpace(settings.prefix)
        self.keys = {c: self.keyspace.capability(c) for c in self.capabilities}
        self._by_stream = {k.stream: k for k in self.keys.values()}
        self.client = client or make_async_client(settings)
        self.gateway = AsyncGateway(self.client, settings.redis_url)
        self.ctx = decide.Context(settings, self.name)
        self.breakers = {
            c: Breaker(settings.breaker_threshold, settings.breaker_cooldown_s, settings.breaker_max_cooldown_s)
            for c in self.capabilities
        }
        self.executor = Executor(concurrency)
        self.metrics = {c: metrics.CapabilityMetrics(c) for c in self.capabilities}
        self.inflight = 0
        # Keyed by (capability, entry id): entry ids are unique within a stream only, and two streams often
        # hand out the same id in the same millisecond.
        self._slotted: set[Held] = set()
        self.held: dict[Held, Delivery | None] = {}
        self.running: dict[Held, asyncio.Task[None]] = {}
        self.started_at = time.time()
        self._stopping: asyncio.Event | None = None
        self._slot_free: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rotation = 0
        self.settler: Settler | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop; safe to call from a signal handler or another thread."""
        if self._loop is not None and self._stopping is not None and self._slot_free is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._loop.call_soon_threadsafe(self._slot_free.set)

    def record(self) -> WorkerRecord:
        """What the heartbeat publishes about this worker."""
        return WorkerRecord(
            consumer=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            capabilities=tuple(self.capabilities),
            concurrency=self.concurrency,
            inflight=self.inflight,
            version=__version__,
            started_at=self.started_at,
            last_seen=time.time(),
            circuits={c: b.state for c, b in self.breakers.items()},
        )

    async def run(self) -> None:
        """Serve until stopped; then finish in-flight tasks within ``grace_s`` and hand the rest back."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self.settler = Settler(self.gateway, self._settled)
        await self._start_up()
        heartbeat = Heartbeat(self.settings, self.name, self.capabilities, self.record)
        heartbeat.start()
        if self.upkeep is not None:
            self.upkeep.start()
        settling = asyncio.create_task(self.settler.run(), name="settler")
        log.info(
            "worker started consumer=%s capabilities=%s concurrency=%d", self.name, self.capabilities, self.concurrency
        )
        try:
            await self._fetch_loop()
        finally:
            await self._shut_down(settling)
            if self.upkeep is not None:
                self.upkeep.stop()
            heartbeat.stop(unregister=True)
            await self.client.aclose()
            log.info("worker stopped consumer=%s", self.name)

    async def _start_up(self) -> None:
        version, policy = await self.gateway.run(streams.server_check())
        if policy not in ("noeviction", "unknown"):
            log.warning("maxmemory-policy is %s, not noeviction: Redis may evict a stream and lose tasks", policy)
        await self.gateway.run(streams.ensure_groups([k.stream for k in self.keys.values()]))
        await self.gateway.run(streams.register_capabilities(self.keyspace.capabilities, self.capabilities))
        log.debug("redis ok version=%s policy=%s", version, policy)

    async def _shut_down(self, settling: asyncio.Task[None]) -> None:
        assert self.settler is not None
        if self.running:
            log.info(
                "stopping: waiting for in-flight tasks count=%d grace_s=%s", len(self.running), self.settings.grace_s
            )
            await asyncio.wait(list(self.running.values()), timeout=self.settings.grace_s)
        for (capability, entry_id), running in list(self.running.items()):
            running.cancel()
            delivery = self.held.get((capability, entry_id))
            if delivery is not None:  # still running after the grace period: back to the fleet at once
                keys = self.keys[capability]
                decision = decide.retry(self.ctx, keys, delivery, 0, delivery.attempt + 1, delivery.reclaims)
                self.settler.put(decision.transition)
        self.settler.close()
        try:
            await asyncio.wait_for(settling, timeout=max(5.0, self.settings.grace_s))
        except TimeoutError:
            log.error("stopping: %d transitions not recorded; the reaper will recover them", len(self.settler))
        self.executor.shutdown()

    # ---- fetching --------------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        assert self._stopping is not None and self._slot_free is not None
        recover = True
        outage = False
        delay_s = 0.05
        while not self._stopping.is_set():
            free = self.concurrency - self.inflight
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()  # stop() sets it too
                continue
            try:
                if recover:
                    recover = not await self._recover_pending(free)
                    continue
                got = await self._read_new(free)
            except DispatcherError as e:  # never a crash loop: back off, reconnect, re-read own pending
                metrics.REDIS_ERRORS.labels("read").inc()
                level = logging.WARNING if isinstance(e, RedisUnavailable) else logging.ERROR
                if not outage:  # once per outage, not once per retry
                    log.log(level, "read failed, retrying with backoff error=%s", e)
                outage = True
                await self._wait_any(asyncio.sleep(delay_s), None)
                delay_s = min(delay_s * 2, 5.0)
                recover = True
                continue
            delay_s = 0.05
            if outage:
                log.info("reading again after an outage consumer=%s", self.name)
                outage = False
            if not got and self.burst and self.inflight == 0 and not self.settler:
                break

    async def _read_new(self, free: int) -> int:
        wanted, count = self._plan(free)
        if not wanted:
            wait_s = min((b.seconds_until_trial() for b in self.breakers.values()), default=0.1)
            await self._wait_any(asyncio.sleep(max(wait_s, 0.05)), None)
            return 0
        block_ms = None if self.burst else self.settings.block_ms
        replies = await self.gateway.run(streams.read(wanted, self.name, count, block_ms))
        return self._dispatch(replies)

    def _plan(self, free: int) -> tuple[list[str], int]:
        """Streams to read and COUNT per stream, so that the entries returned never exceed ``free``."""
        open_caps = [c for c in self.capabilities if self.breakers[c].allowance(free) > 0]
        if not open_caps:
            return [], 0
        self._rotation = (self._rotation + 1) % len(open_caps)
        ordered = open_caps[self._rotation :] + open_caps[: self._rotation]
        if any(self.breakers[c].state == "half_open" for c in ordered):
            ordered = [c for c in ordered if self.breakers[c].state == "half_open"][:1]
            return [self.keys[ordered[0]].stream], 1
        per_stream = free // len(ordered)
        if per_stream == 0:  # fewer slots than streams: one entry from each of the first `free` streams
            return [self.keys[c].stream for c in ordered[:free]], 1
        return [self.keys[c].stream for c in ordered], per_stream

    async def _recover_pending(self, free: int) -> bool:
        """Re-read this consumer's own pending entries (not already held); True when none are left."""
        cursors = {k.stream: "0" for k in self.keys.values()}
        for _ in range(10_000):  # bounded: each round advances a cursor or ends
            if not cursors or self.inflight >= self.concurrency:
                return not cursors
            wanted = list(cursors)
            replies = await self.gateway.run(
                streams.read(wanted, self.name, max(free, 1), None, after=[cursors[s] for s in wanted])
            )
            seen = {stream for stream, entries in replies if entries}
            for stream, entries in replies:
                if entries:
                    cursors[stream] = entries[-1][0]
            fresh = [
                (s, [e for e in entries if (self._by_stream[s].capability, e[0]) not in self.held])
                for s, entries in replies
            ]
            self._dispatch(fresh)
            cursors = {s: c for s, c in cursors.items() if s in seen}
        return True

    def _dispatch(self, replies: list[tuple[str, list[tuple[str, dict[bytes, bytes] | None]]]]) -> int:
        assert self.settler is not None
        count = 0
        for stream, entries in replies:
            keys = self._by_stream[stream]
            gone = [entry_id for entry_id, fields in entries if not fields]
            if gone:  # deleted from the stream while pending: nothing to run, just release the PEL entry
                for entry_id in gone:
                    self.held[(keys.capability, entry_id)] = None
                    self.settler.put(Release(keys, entry_id))
            for entry_id, fields in entries:
                if fields:
                    count += 1
                    self._start(keys, entry_id, fields)
        return count

    def _start(self, keys: CapabilityKeys, entry_id: str, fields: dict[bytes, bytes]) -> None:
        assert self.settler is not None
        try:
            delivery = codec.decode_entry(keys.capability, entry_id, fields, self.settings.max_payload_bytes)
        except DecodeError as e:
            log.warning(
                "undecodable entry dead-lettered capability=%s entry_id=%s error=%s", keys.capability, entry_id, e
            )
            self.held[(keys.capability, entry_id)] = None
            self.settler.put(decide.undecodable(self.ctx, keys, entry_id, fields, e).transition)
            metrics.DEAD_LETTERS.labels(keys.capability, "decode_error").inc()
            return
        task = delivery.task
        held = (keys.capability, entry_id)
        self.held[held] = delivery
        if task.expires_at is not None and time.time() > task.expires_at:
            self.settler.put(decide.dead(self.ctx, keys, delivery, "expired", None).transition)
            metrics.DEAD_LETTERS.labels(keys.capability, "expired").inc()
            return
        if self.faults.active:
            self.faults.reach("after_read")
        self.inflight += 1  # held until the outcome is recorded (_settled), not just until the handler returns
        self._slotted.add(held)
        self.breakers[keys.capability].started()
        self.metrics[keys.capability].inflight.inc()
        self.running[held] = asyncio.create_task(self._execute(keys, delivery))

    # ---- running ---------------------------------------------------------------------------------------

    async def _execute(self, keys: CapabilityKeys, delivery: Delivery) -> None:
        assert self.settler is not None
        handler = self.registry.get(keys.capability)
        assert handler is not None
        measures = self.metrics[keys.capability]
        started = time.perf_counter()
        ok = False
        try:
            value = await self.executor.call(handler, delivery.task, self._release_slot)
            if self.faults.active:
                self.faults.record(delivery.task.id, self.name)
                self.faults.reach("after_handler")
            decision = decide.succeeded(self.ctx, keys, delivery, value)
            ok = True
        except asyncio.CancelledError:
            raise  # shutdown: the runtime hands the task back
        except (Exception, SystemExit) as e:  # a handler's failure, whatever it is, fails the attempt
            if isinstance(e, HandlerTimeout) and e.thread_running:
                self.inflight += 1  # the thread still runs: it holds a slot of its own until it ends
            decision = decide.failed(self.ctx, keys, delivery, e)
            if not isinstance(e, RetrySignal | Reject):
                self._record_failure(keys.capability, delivery, e)
        finally:
            self.running.pop((keys.capability, delivery.entry_id), None)
            measures.inflight.dec()
        if ok:
            self.breakers[keys.capability].record(True)
        measures.seconds.observe(time.perf_counter() - started)
        measures.outcomes[decision.outcome].inc()
        if decision.outcome == "dead":
            metrics.DEAD_LETTERS.labels(keys.capability, decision.reason).inc()
        self.settler.put(decision.transition)

    def _record_failure(self, capability: str, delivery: Delivery, error: BaseException) -> None:
        log.info(
            "handler failed capability=%s task_id=%s attempt=%d error=%s: %s",
            capability,
            delivery.task.id,
            delivery.attempt,
            type(error).__name__,
            error,
        )
        if self.breakers[capability].record(False):
            metrics.CIRCUIT_OPEN.labels(capability).set(1)
            log.warning(
                "circuit open capability=%s consumer=%s failures=%d",
                capability,
                self.name,
                self.breakers[capability].failures,
            )

    def _release_slot(self) -> None:
        assert self._slot_free is not None
        self.inflight -= 1
        self._slot_free.set()

    def _settled(self, capability: str, entry_id: str) -> None:
        """The entry's outcome is recorded (or given up): it leaves this worker's hands and frees its slot.

        Freeing the slot only now keeps this consumer's pending entries at most ``concurrency``: a task whose
        result is not yet recorded is still held, and a worker that dies loses only what it really held.
        """
        held = (capability, entry_id)
        self.held.pop(held, None)
        if held in self._slotted:
            self._slotted.discard(held)
            self._release_slot()

    async def _wait_any(self, awaitable: Awaitable[Any], timeout_s: float | None) -> None:
        """Wait for ``awaitable`` or the stop request, whichever comes first."""
        assert self._stopping is not None
        waiter = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({waiter, stopper}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for f in (waiter, stopper):
            f.cancel()


__all__ = ["DispatcherError", "Worker", "consumer_name"]
