"""Waiting for settlements: every ``result()`` of one dispatcher shares one pub/sub connection and one reader.

Each settlement script publishes the stored result record on the task's channel. A waiter joins its channel
(the first waiter of a channel sends SUBSCRIBE), and re-reads the result whenever the reader sees that channel's
subscribe confirmation: only from then on is a settlement announced to us, so the read after it cannot miss one.
The reader also wakes every waiter to re-read after a lost connection (redis-py re-subscribes when it
reconnects, and those confirmations wake them again), and each waiter re-reads at least every ``RECHECK_S``
regardless. Channels whose last waiter left are unsubscribed by the reader.

One connection for all waiters is what keeps ``result()`` fast: a pub/sub connection of its own per call costs a
TCP connect and handshake, and closing it costs a disconnect, on every call.

The pub/sub commands go through redis-py's ``PubSub`` here, not through the gateway, which sends request/reply
batches only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from dispatcher.errors import ResultTimeout
from dispatcher.gateway import wrap_error
from dispatcher.settings import Backoff

log = logging.getLogger(__name__)

RECHECK_S = 5.0
"""A waiter re-reads its result at least this often, whatever it heard: the backstop for a lost announcement."""

_POLL_S = 1.0
"""The reader's longest single read: how often it looks at its own state (stop, unsubscribes) when all is quiet."""

_LINGER_S = 10.0
"""The sync reader thread ends after this long without waiters; the next ``result()`` starts a new one."""

_STOP_JOIN_S = 2.0
_RECONNECT = Backoff(base_s=0.1, factor=2.0, max_s=1.0, jitter=0.0)
"""Pause of the reader between attempts while its connection is down: 0.1 s, doubling up to 1 s."""
_READ_ERRORS = (redis.exceptions.RedisError, OSError)


def remaining_s(deadline: float | None) -> float:
    """How long to wait before the next re-read; raises ``ResultTimeout`` once ``deadline`` has passed."""
    if deadline is None:
        return RECHECK_S
    left = deadline - time.monotonic()
    if left <= 0:
        raise ResultTimeout("the task did not settle in time")
    return min(left, RECHECK_S)


class Waiter:
    """One ``result()`` call waiting on ``channel``: ``wake()`` asks it to re-read; ``record`` is what an
    announcement carried."""

    __slots__ = ("_wake", "channel", "record")

    def __init__(self, channel: str, wake: Callable[[], None]) -> None:
        self.channel = channel
        self.record: bytes | None = None
        self._wake = wake

    def wake(self, record: bytes | None = None) -> None:
        if record is not None:
            self.record = record
        self._wake()


class Subscriptions:
    """Who waits on which channel (sans-IO): what to subscribe, what to unsubscribe, whom a message wakes.

    Not thread-safe on its own: each driver calls it under its own lock (the sync one from several threads).
    """

    def __init__(self) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        self._idle: set[str] = set()

    @property
    def busy(self) -> bool:
        return bool(self._waiters)

    def join(self, waiter: Waiter) -> bool:
        """Add ``waiter``; True when its channel had no waiter, so the caller must send SUBSCRIBE.

        A waiter that joins a channel already subscribed is woken at once: the confirmation it would wait for
        may have come already. If it has not, it comes later and wakes this waiter again.
        """
        group = self._waiters.get(waiter.channel)
        self._idle.discard(waiter.channel)
        if group is None:
            self._waiters[waiter.channel] = {waiter}
            return True
        group.add(waiter)
        waiter.wake()
        return False

    def leave(self, waiter: Waiter) -> None:
        """Remove ``waiter`` (again is harmless); a channel left without waiters is due for UNSUBSCRIBE."""
        group = self._waiters.get(waiter.channel)
        if group is None or waiter not in group:
            return
        group.discard(waiter)
        if not group:
            del self._waiters[waiter.channel]
            self._idle.add(waiter.channel)

    def take_idle(self) -> list[str]:
        """Channels to unsubscribe now (no waiter joined them since they went idle)."""
        idle, self._idle = list(self._idle), set()  # join() takes a re-joined channel out of this set
        return idle

    def deliver(self, message: dict[str, Any]) -> None:
        """Hand one pub/sub message to the waiters of its channel."""
        raw = message.get("channel")
        channel = raw.decode() if isinstance(raw, bytes) else str(raw)
        group = self._waiters.get(channel)
        kind = message.get("type")
        if group is None:
            if kind == "subscribe":  # re-subscribed after a reconnect, but nobody waits any more
                self._idle.add(channel)
            return
        data = message.get("data")
        if kind == "message" and isinstance(data, bytes):
            for waiter in list(group):
                waiter.wake(data)
        elif kind == "subscribe":
            for waiter in list(group):
                waiter.wake()

    def wake_all(self) -> None:
        """Ask every waiter to re-read (the connection was lost: announcements may have been missed)."""
        for group in self._waiters.values():
            for waiter in list(group):
                waiter.wake()


class Listener:
    """The sync driver: a reader thread, started on demand, ending after ``_LINGER_S`` without waiters."""

    def __init__(self, client: redis.Redis, url: str) -> None:
        self._client = client
        self._url = url
        self._subs = Subscriptions()
        self._lock = threading.Lock()
        self._pubsub: redis.client.PubSub | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pid = os.getpid()

    def wait(self, channel: str, fetch: Callable[[], bytes | None], deadline: float | None) -> bytes:
        """The result record announced on ``channel``, or the first one ``fetch`` finds after a wake-up.

        Raises:
            ResultTimeout: ``deadline`` (monotonic) passed first.
            RedisUnavailable: Redis could not be reached.
        """
        woken = threading.Event()
        waiter = Waiter(channel, woken.set)
        try:
            self._join(waiter)
            while True:
                woken.wait(remaining_s(deadline))
                woken.clear()
                if waiter.record is not None:
                    return waiter.record
                record = fetch()
                if record is not None:
                    return record
        except redis.exceptions.RedisError as e:
            raise wrap_error(e, self._url) from e
        finally:
            with self._lock:
                self._subs.leave(waiter)

    def close(self) -> None:
        """Stop the reader and close the pub/sub connection (no waiter may be waiting)."""
        with self._lock:
            self._closed = True
            pubsub, thread = self._pubsub, self._thread
        if pubsub is not None and pubsub.connection is not None:
            pubsub.connection.disconnect()  # shuts the socket down: a reader blocked on it returns at once
        if thread is not None:
            thread.join(_STOP_JOIN_S)
        if pubsub is not None:
            pubsub.close()

    def _join(self, waiter: Waiter) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this dispatcher is closed")
            if self._pid != os.getpid():  # forked: the parent's connection and reader are not ours
                self._pubsub, self._thread, self._subs, self._pid = None, None, Subscriptions(), os.getpid()
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
            try:
                if self._subs.join(waiter):
                    # Sent under the lock, so a SUBSCRIBE and the reader's UNSUBSCRIBE of the same channel go out
                    # in the order the bookkeeping decided them.
                    self._pubsub.subscribe(waiter.channel)
            except BaseException:
                self._subs.leave(waiter)
                raise
            if self._thread is None:
                self._thread = threading.Thread(target=self._read, name="dispatcher-listener", daemon=True)
                self._thread.start()

    def _read(self) -> None:
        try:
            self._read_until_idle()
        finally:
            with self._lock:
                self._thread = None

    def _read_until_idle(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        idle_since = time.monotonic()
        failures = 0
        while True:
            try:
                with self._lock:
                    if self._subs.busy:
                        idle_since = time.monotonic()
                    if self._closed or time.monotonic() - idle_since > _LINGER_S:
                        return
                    idle = self._subs.take_idle()
                    if idle:
                        pubsub.unsubscribe(*idle)
                message = pubsub.get_message(timeout=_POLL_S)
                failures = 0
            except Exception as e:  # redis-py raises more than RedisError while reconnecting or closing
                if self._closed:
                    return
                failures += 1
                _report(failures, e)
                with self._lock:
                    self._subs.wake_all()
                time.sleep(_RECONNECT.delay_s(failures))
                continue
            if message is not None:
                with self._lock:
                    self._subs.deliver(message)


class AsyncListener:
    """The asyncio driver: a reader task, started on demand, ending as soon as no one waits."""

    def __init__(self, client: redis.asyncio.Redis, url: str) -> None:
        self._client = client
        self._url = url
        self._subs = Subscriptions()
        self._lock = asyncio.Lock()
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None

    async def wait(self, channel: str, fetch: Callable[[], Awaitable[bytes | None]], deadline: float | None) -> bytes:
        """See ``Listener.wait``."""
        woken = asyncio.Event()
        waiter = Waiter(channel, woken.set)
        try:
            await self._join(waiter)
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining_s(deadline)):
                        await woken.wait()
                woken.clear()
                if waiter.record is not None:
                    return waiter.record
                record = await fetch()
                if record is not None:
                    return record
        except redis.exceptions.RedisError as e:
            raise wrap_error(e, self._url) from e
        finally:
            self._subs.leave(waiter)

    async def aclose(self) -> None:
        """Stop the reader and close the pub/sub connection."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None

    async def _join(self, waiter: Waiter) -> None:
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
            try:
                if self._subs.join(waiter):
                    await self._pubsub.subscribe(waiter.channel)
            except BaseException:
                self._subs.leave(waiter)
                raise
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(self._pubsub))

    async def _read(self, pubsub: redis.asyncio.client.PubSub) -> None:
        failures = 0
        while True:
            try:
                async with self._lock:
                    # Decided and sent under the lock: a waiter re-joining the channel meanwhile re-subscribes
                    # after this, not before.
                    idle = self._subs.take_idle()
                    if idle:
                        await pubsub.unsubscribe(*idle)
                if not self._subs.busy:  # no await between this check and the exit: a joiner starts a new reader
                    self._reader = None
                    return
                message = await pubsub.get_message(timeout=_POLL_S)
                failures = 0
            except _READ_ERRORS as e:
                failures += 1
                _report(failures, e)
                self._subs.wake_all()
                await asyncio.sleep(_RECONNECT.delay_s(failures))
                continue
            if message is not None:
                self._subs.deliver(message)


def _report(failures: int, error: BaseException) -> None:
    if failures == 1:  # once per outage
        log.warning("result listener lost its connection error=%s; waiters re-read, reconnecting", error)
