"""The heartbeat thread: holds a worker's consumer name and keeps its liveness keys fresh, off the work path.

A long or CPU-bound handler must never make its worker look dead (a heartbeat riding the fetch loop would get
live tasks reclaimed), so the beat runs in a thread of its own with its own Redis client. But a worker whose event
loop cannot run (an ``async def`` handler blocked it with ``time.sleep``) must stop looking alive, or its tasks
stay stuck for good: the beat is skipped while the loop has not answered for half a TTL (the watchdog), and the
blocking stack is logged once. The reaper then gives the worker's tasks to others; if the loop recovers, the
worker beats again, and its late results are refused as lost leases.

Each heartbeat key is a lease held under a token drawn at start: a second worker started with a consumer name in
use waits for the first one's heartbeat to lapse (a restart after a crash) and refuses to start while it lives.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from dispatcher.errors import ConfigError, DispatcherError
from dispatcher.observe import metrics
from dispatcher.settings import Settings
from dispatcher.store import liveness
from dispatcher.store.codec import WorkerRecord, encode_worker
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace
from workers.clock import ServerClock

log = logging.getLogger(__name__)

CLAIM_POLL_S = 0.25


class Heartbeat:
    """Holds the consumer name and refreshes its heartbeat keys every TTL/3 until ``stop()``.

    Args:
        settings: shared settings (``heartbeat_ttl_s``).
        consumer: the consumer name to hold.
        capabilities: one heartbeat key per capability.
        record: what to publish in the registry with each beat.
        loop_seen: the monotonic time the worker's event loop last ran its tick (the watchdog's input).
        on_lost: called (from the thread) when another worker took the name over: the worker must stop.
        clock: Redis' clock as this worker sees it, corrected from ``TIME`` at each beat.

    Each beat also reads the paused flags of the capabilities (same round trip): ``paused`` is the set of those
    paused now, which the fetch loop skips.
    """

    def __init__(
        self,
        settings: Settings,
        consumer: str,
        capabilities: Sequence[str],
        record: Callable[[], WorkerRecord],
        loop_seen: Callable[[], float] = time.monotonic,
        on_lost: Callable[[str], None] = lambda reason: None,
        clock: ServerClock | None = None,
    ) -> None:
        keyspace = KeySpace(settings.prefix)
        self._keys = [keyspace.capability(c).heartbeat(consumer) for c in capabilities]
        self._paused_keys = [keyspace.capability(c).paused for c in capabilities]
        self.paused: frozenset[str] = frozenset()
        self._registry = keyspace.workers
        self._capabilities_key = keyspace.capabilities
        self._capabilities = list(capabilities)
        self._consumer = consumer
        self._record = record
        self._loop_seen = loop_seen
        self._on_lost = on_lost
        self.clock = clock or ServerClock()
        self.token = secrets.token_hex(8)
        self._ttl_ms = int(settings.heartbeat_ttl_s * 1000)
        self._interval_s = settings.heartbeat_ttl_s / 3
        self.stall_s = settings.heartbeat_ttl_s / 2
        """How long the event loop may not answer before the beat is skipped."""
        self._client = make_client(settings)
        self._gateway = Gateway(self._client, settings.redis_url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{consumer}", daemon=True)
        self._loop_thread = threading.get_ident()
        self.failures = 0
        self.last_beat_s: float | None = None
        """The monotonic time of the last beat that held every key (None before the first)."""
        self.stalled = False
        self.lost = False

    def beat(self) -> bool:
        """One refresh; False when another worker holds one of this name's heartbeat keys (raises Redis errors)."""
        op = liveness.heartbeat(
            self._keys,
            self.token,
            self._registry,
            self._consumer,
            encode_worker(self._record()),
            self._ttl_ms,
            self._capabilities_key,
            self._capabilities,
            self._paused_keys,
        )
        sent = time.time()
        held, server_s, flags = self._gateway.run(op)
        self.clock.observe(server_s, sent, time.time())
        paused = frozenset(c for c, flag in zip(self._capabilities, flags, strict=True) if flag)
        if paused != self.paused:
            log.info("paused capabilities now %s consumer=%s", sorted(paused) or "none", self._consumer)
        self.paused = paused
        if not all(held):
            return False
        self.last_beat_s = time.monotonic()
        metrics.LAST_HEARTBEAT.set(server_s)
        return True

    def claim(self, wait_s: float) -> None:
        """Take the consumer name before the worker reads anything, waiting up to ``wait_s`` for the heartbeat of a
        previous holder to lapse (a crashed process's name is free within one TTL).

        Raises:
            ConfigError: another live worker holds the name.
            RedisUnavailable, RedisError: Redis could not be reached.
        """
        deadline = time.monotonic() + wait_s
        waited = False
        while not self.beat():
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"consumer name {self._consumer!r} is held by another live worker (its heartbeat is fresh): "
                    "give each worker its own --name, or leave --name unset for a unique one"
                )
            if not waited:
                log.warning("consumer name in use, waiting up to %.0f s for it consumer=%s", wait_s, self._consumer)
                waited = True
            time.sleep(CLAIM_POLL_S)

    def start(self) -> None:
        """Beat every TTL/3 in the thread (``claim`` has beaten once already)."""
        self._loop_thread = threading.get_ident()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if self._watchdog():
                continue
            try:
                held = self.beat()
                if self.failures:
                    log.info("heartbeat restored consumer=%s", self._consumer)
                self.failures = 0
            except DispatcherError as e:
                self.failures += 1
                if self.failures == 1:
                    log.warning("heartbeat failed consumer=%s error=%s", self._consumer, e)
                continue
            except Exception:  # the thread must outlive a bug, or the live worker looks dead
                self.failures += 1
                log.exception("heartbeat crashed consumer=%s", self._consumer)
                continue
            if not held:
                self.lost = True
                self._on_lost(f"another worker took over consumer name {self._consumer!r}")
                return

    def _watchdog(self) -> bool:
        """True while the event loop does not answer: the beat is skipped, so the worker stops looking alive."""
        quiet_s = time.monotonic() - self._loop_seen()
        if quiet_s <= self.stall_s:
            if self.stalled:
                log.warning("event loop answers again after a stall consumer=%s", self._consumer)
            self.stalled = False
            return False
        if not self.stalled:
            self.stalled = True
            frame = sys._current_frames().get(self._loop_thread)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
            log.error(
                "event loop blocked for %.1f s: heartbeat stopped so the reaper gives this worker's tasks to others "
                "(a handler that blocks in async code?) consumer=%s; the blocking stack:\n%s",
                quiet_s,
                self._consumer,
                stack,
            )
        return True

    def stop(self, unregister: bool = True) -> None:
        """Stop beating; with ``unregister``, delete the heartbeat keys this worker holds and its registry record."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if unregister and not self.lost:
            try:
                self._gateway.run(liveness.unregister(self._keys, self.token, self._registry, self._consumer))
            except DispatcherError as e:
                log.warning("heartbeat unregister failed consumer=%s error=%s", self._consumer, e)
        self._client.close()
