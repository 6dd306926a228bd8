"""The worker: serves its capabilities until stopped, or in burst mode until nothing is left to do.

``Worker`` puts the parts together and runs their lifecycle: the sans-IO slots and read plan
(``workers.slots``), the fetch loop (``workers.reader``), the handler runs (``workers.runner``), the batched
recording of outcomes (``workers.settler``), the heartbeat thread (``workers.heartbeat``), and the fleet upkeep
(delayed-task mover and reaper, ``dispatcher.fleet.upkeep``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence

from dispatcher import __version__
from dispatcher.errors import ConfigError
from dispatcher.faults import Faults
from dispatcher.fleet import decide
from dispatcher.fleet.upkeep import Upkeep
from dispatcher.observe import metrics
from dispatcher.settings import Settings
from dispatcher.store import streams
from dispatcher.store.codec import WorkerRecord
from dispatcher.store.connection import AsyncClient, make_async_client, make_read_client
from dispatcher.store.gateway import AsyncGateway
from dispatcher.store.keys import KeySpace
from dispatcher.store.transitions import Transition
from workers import startup
from workers.breaker import Breaker
from workers.clock import ServerClock
from workers.executor import Executor
from workers.heartbeat import Heartbeat
from workers.reader import Reader
from workers.registry import Registry
from workers.runner import Runner
from workers.settler import Settler
from workers.slots import Slots

log = logging.getLogger(__name__)


TICK_S = 0.25
"""How often the loop tells the heartbeat's watchdog that it runs."""
DEFAULT_CONCURRENCY = 64
"""Tasks a worker holds at once unless told otherwise. Chosen by measurement (docs/performance.md: drain of 20k
no-op tasks on 2 workers): at 10 a worker waits on round trips (48 % of the best async drain, 35 % sync); from 64
on both are within noise of the best. A slot costs little (an entry held, a coroutine or, for a sync handler, a
pool thread started only when that many run at once)."""


def _breaker(settings: Settings) -> Breaker:
    return Breaker(
        settings.breaker_threshold,
        settings.breaker_cooldown_s,
        settings.breaker_max_cooldown_s,
        window=settings.breaker_window,
        ratio=settings.breaker_ratio,
    )


def consumer_name() -> str:
    """A unique, readable consumer name: host-pid-random."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Serves ``capabilities`` with handlers from ``registry`` until ``stop()`` (or, in burst mode, until
    nothing is left to read, run or record).

    Args:
        registry: where the handlers come from.
        capabilities: the capabilities to serve; each must have a handler.
        settings: shared settings.
        concurrency: the most tasks held at once (thread pool size and async bound alike).
        name: the consumer name (default host-pid-random).
        burst: drain what is there, then return.
        upkeep: also run the fleet upkeep (delayed-task mover and reaper, each under a fleet-wide lease).
        client: an injected asyncio Redis client (closed when the worker stops).
        about: what the start-up banner says of the app and the metrics address (the ``worker`` command knows).

    Raises:
        ConfigError: a capability without a handler, or a concurrency below 1.
    """

    def __init__(
        self,
        registry: Registry,
        capabilities: Sequence[str],
        settings: Settings,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        name: str | None = None,
        burst: bool = False,
        upkeep: bool = True,
        client: AsyncClient | None = None,
        about: startup.About | None = None,
    ) -> None:
        missing = [c for c in capabilities if registry.get(c) is None]
        if missing or not capabilities:
            raise ConfigError(f"no handler for capabilities {missing}; found {registry.capabilities()}")
        if concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        self.settings = settings
        self.capabilities = list(dict.fromkeys(capabilities))
        self.concurrency = concurrency
        self.name = name or consumer_name()
        self.burst = burst
        self.about = about or startup.About()
        self.clock = ServerClock()
        self.started_at = time.time()
        self.keyspace = KeySpace(settings.prefix)
        self.keys = {c: self.keyspace.capability(c) for c in self.capabilities}
        self.client = client or make_async_client(settings)
        self.gateway = AsyncGateway(self.client, settings.redis_url)
        # Reads go through a client of their own (see make_read_client); an injected client serves reads too.
        self.read_client = client or make_read_client(settings)
        faults = Faults.from_env()
        self.upkeep = Upkeep(settings, self.name, faults=faults) if upkeep else None
        self.breakers = {c: _breaker(settings) for c in self.capabilities}
        self.slots = Slots(concurrency)
        self.executor = Executor(concurrency)
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_seen = time.monotonic()
        self._hung_since: float | None = None
        self._ticking: asyncio.TimerHandle | None = None
        self.heartbeat: Heartbeat | None = None
        """The heartbeat thread, once the worker holds its consumer name; its ``paused`` says which capabilities
        the fetch loop skips."""
        self.failure: str | None = None
        """Why the worker stopped on its own (its name taken over, its slots hung), None for a requested stop."""
        self.settler = Settler(self.gateway, self._settled)
        ctx = decide.Context(settings, self.name)
        self.runner = Runner(
            registry,
            ctx,
            self.slots,
            self.settler,
            self.breakers,
            self.executor,
            faults,
            self._slot_free.set,
            self.clock,
        )
        self.reader = Reader(
            AsyncGateway(self.read_client, settings.redis_url),
            self.name,
            self.keys,
            self.slots,
            self.runner,
            self.breakers,
            block_ms=settings.block_ms,
            burst=burst,
            stopping=self._stopping,
            slot_free=self._slot_free,
            settling=lambda: len(self.settler),
            recorded=lambda: self.settler.recorded,
            reconcile_s=settings.heartbeat_ttl_s,
            paused=lambda: self.heartbeat.paused if self.heartbeat is not None else frozenset(),
        )

    def _settled(self, recorded: Sequence[Transition]) -> None:
        self.runner.settled(recorded)

    def _tick(self) -> None:
        """Every ``TICK_S`` on the loop: tell the watchdog the loop runs, and give up when hung threads hold every
        slot for ``hung_exit_s`` (the worker cannot work: it hands back what it holds and exits for a restart)."""
        now = self._loop_seen = time.monotonic()
        if self.slots.strays and self.slots.free <= 0:
            if self._hung_since is None:
                self._hung_since = now
            elif now - self._hung_since > self.settings.hung_exit_s and self.failure is None:
                self._stop_for(
                    f"every slot held for {now - self._hung_since:.0f} s by {self.slots.strays} handler threads "
                    "running past their timeout"
                )
        else:
            self._hung_since = None
        if self._loop is not None:  # ticks go on while stopping: the grace period must not look like a stall
            self._ticking = self._loop.call_later(TICK_S, self._tick)

    def _stop_for(self, reason: str) -> None:
        """Stop because the worker cannot go on (safe from any thread); ``failure`` says why."""
        if self.failure is None:
            self.failure = reason
            log.error("stopping: %s consumer=%s", reason, self.name)
        self.stop()

    def stop(self) -> None:
        """Ask for a graceful stop; safe to call from a signal handler or another thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._loop.call_soon_threadsafe(self._slot_free.set)

    @property
    def stopping(self) -> bool:
        """A stop was asked for (or the worker stops on its own): it reads no more."""
        return self._stopping.is_set()

    def loop_quiet_s(self) -> float:
        """Seconds since the event loop last ran its tick (0 before ``run``; safe from any thread)."""
        return 0.0 if self._loop is None else time.monotonic() - self._loop_seen

    def record(self) -> WorkerRecord:
        """What the heartbeat publishes about this worker."""
        return WorkerRecord(
            consumer=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            capabilities=tuple(self.capabilities),
            concurrency=self.concurrency,
            inflight=len(self.slots.held) + self.slots.strays,
            version=__version__,
            started_at=self.started_at,
            last_seen=self.clock.now(),
            circuits={c: b.state for c, b in self.breakers.items()},
        )

    async def run(self) -> None:
        """Serve until stopped; then finish in-flight tasks within ``grace_s`` and hand the rest back.

        Raises:
            ConfigError: the consumer name is held by another live worker.
            RedisUnavailable, UnsupportedRedis, RedisError: Redis could not be used at start.
        """
        self._loop = asyncio.get_running_loop()
        self._tick()  # from the start: /livez reads it while start-up waits on Redis
        try:
            redis_version = await self._start_up()
            heartbeat = Heartbeat(
                self.settings,
                self.name,
                self.capabilities,
                self.record,
                lambda: self._loop_seen,
                self._stop_for,
                self.clock,
            )
            await asyncio.to_thread(heartbeat.claim, self.settings.heartbeat_ttl_s * 1.5)
        except BaseException:
            if self._ticking is not None:
                self._ticking.cancel()
            raise
        self.heartbeat = heartbeat
        heartbeat.start()
        metrics.WORKER_CONCURRENCY.inc(self.concurrency)
        if self.upkeep is not None:
            self.upkeep.start()
        settling = asyncio.create_task(self.settler.run(), name="settler")
        handlers = [h for h in map(self.runner.registry.get, self.capabilities) if h is not None]
        for line in startup.banner(self.about, self.settings, redis_version, self.name, self.concurrency, handlers):
            log.info("%s", line)
        try:
            await self.reader.run()
        finally:
            await self._shut_down(settling)
            metrics.WORKER_CONCURRENCY.dec(self.concurrency)
            if self.upkeep is not None:
                self.upkeep.stop()
            if self._ticking is not None:
                self._ticking.cancel()
            heartbeat.stop(unregister=True)
            await self.client.aclose()
            if self.read_client is not self.client:
                await self.read_client.aclose()
            log.info("worker stopped consumer=%s", self.name)

    async def _start_up(self) -> str:
        """Wait for Redis (bounded by ``start_wait_s``), check it, create the groups; returns its version."""
        version, policy = await startup.wait_for_redis(self.gateway, self.settings)
        if policy not in ("noeviction", "unknown"):
            log.warning("maxmemory-policy is %s, not noeviction: Redis may evict a stream and lose tasks", policy)
        await self.gateway.run(streams.ensure_groups([k.stream for k in self.keys.values()]))
        await self.gateway.run(streams.register_capabilities(self.keyspace.capabilities, self.capabilities))
        log.debug("redis ok version=%s policy=%s", version, policy)
        return version

    async def _shut_down(self, settling: asyncio.Task[None]) -> None:
        jobs = self.runner.jobs()
        finished = 0
        if jobs:
            log.info("stopping: waiting for in-flight tasks count=%d grace_s=%s", len(jobs), self.settings.grace_s)
            finished = len((await asyncio.wait(jobs, timeout=self.settings.grace_s))[0])
        handed_back = self.runner.stop_running(self.keys)  # still running after the grace: back to the fleet now
        log.info(
            "stopping: in-flight tasks finished_in_grace=%d handed_back=%d consumer=%s",
            finished,
            handed_back,
            self.name,
        )
        self.settler.close()
        try:
            await asyncio.wait_for(settling, timeout=max(5.0, self.settings.grace_s))
        except TimeoutError:
            log.error("stopping: %d transitions not recorded; the reaper will recover them", len(self.settler))
        self.executor.shutdown()


__all__ = ["Worker", "consumer_name"]
