"""Waiting for settlements: every ``result()`` of one dispatcher shares one pub/sub connection and one reader.

Each settlement script publishes the stored result record on the task's channel. A waiter joins its channel
(the first waiter of a channel sends SUBSCRIBE), and re-reads the result whenever the reader sees that channel's
subscribe confirmation: only from then on is a settlement announced to us, so the read after it cannot miss one.
The reader also wakes every waiter to re-read after a lost connection (redis-py re-subscribes when it
reconnects, and those confirmations wake them again), and each waiter re-reads at least every ``RECHECK_S``
regardless. Channels whose last waiter left are unsubscribed by the reader.

One connection for all waiters is what keeps ``result()`` fast: a pub/sub connection of its own per call costs a
TCP connect and handshake, and closing it costs a disconnect, on every call.

Holding: once a dispatcher's ``result()`` has been called, it expects more of them, so for ``LINGER_S`` after
each call the channels of newly submitted tasks are subscribed right after their submit, before the task can
have run, and kept for as long as their handle lives. The announcement then usually arrives before or while
``result()`` waits, without a subscribe round trip and without the re-read that a settlement landing during the
subscribe needs; an announcement that comes before the call is kept for it, so that ``result()`` returns at once.
Kept records are bounded by bytes (``subscriptions.MAX_HELD_BYTES``): beyond the bound only the fact of the
settlement is kept, and that ``result()`` reads the record.
A joining waiter still re-reads once (the hold's SUBSCRIBE may not have been confirmed before the settlement),
so holding changes how fast ``result()`` returns, never what it returns.

The pub/sub commands go through redis-py's ``PubSub`` here, not through the gateway, which sends request/reply
batches only. This module holds the sync driver and what both drivers share; the asyncio driver is
``dispatcher.producer.aio_listener``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from dispatcher.errors import DispatcherClosed
from dispatcher.producer.sharded_pubsub import ShardedPubSub
from dispatcher.producer.subscriptions import Subscriptions, Waiter, remaining_s
from dispatcher.settings import Backoff
from dispatcher.store.connection import SyncClient
from dispatcher.store.gateway import wrap_error

log = logging.getLogger(__name__)

POLL_S = 1.0
"""The reader's longest single read: how often it looks at its own state (stop, unsubscribes) when all is quiet."""

LINGER_S = 10.0
"""The sync reader thread ends after this long without waiters; the next ``result()`` starts a new one."""

STOP_JOIN_S = 2.0
RECONNECT = Backoff(base_s=0.1, factor=2.0, max_s=1.0, jitter=0.0)
"""Pause of the reader between attempts while its connection is down: 0.1 s, doubling up to 1 s."""
READ_ERRORS = (redis.exceptions.RedisError, OSError)


class Holding:
    """When to hold (``result()`` was called in the last ``LINGER_S``), and a hold's release with its handle."""

    _subs: Subscriptions
    _wanted_until = 0.0

    def expect(self) -> None:
        """A ``result()`` call: hold the channels of tasks submitted from now on, for a while."""
        self._wanted_until = time.monotonic() + LINGER_S

    def holds(self, channel: str) -> bool:
        """Whether ``channel`` is held: a waiter on it starts with the listener, not with a read of its own."""
        return self._subs.holds(channel)

    def wanted(self) -> bool:
        """Whether ``hold`` holds now."""
        return time.monotonic() < self._wanted_until

    def _tie(self, owners: Sequence[tuple[object, str]]) -> None:
        for owner, channel in owners:  # a handle garbage-collected before its result() releases its channel
            if self._subs.holds(channel):
                weakref.finalize(owner, self._subs.release_later, channel).atexit = False


def hold_failed(channels: Sequence[str], subs: Subscriptions, error: BaseException) -> None:
    """Give up holding ``channels`` whose SUBSCRIBE failed (each driver calls it under its lock)."""
    for channel in channels:
        subs.release(channel)
    log.debug("could not hold result channels error=%s; their result() reads and subscribes itself", error)


class Listener(Holding):
    """The sync driver: a reader thread, started on demand, ending after ``LINGER_S`` without waiters."""

    def __init__(self, client: SyncClient, url: str) -> None:
        self._client = client
        self._url = url
        self._closed = False
        self._fresh()
        _LISTENERS.add(self)

    def _fresh(self) -> None:
        """No connection, reader or subscription yet, and a free lock: a new listener, and one in a forked child
        (the parent's lock may have been held by its reader thread at the fork, a thread that does not exist there;
        the parent's connection and reader are not the child's)."""
        self._lock = threading.Lock()
        self._subs = Subscriptions()
        self._pubsub: redis.client.PubSub | ShardedPubSub | None = None
        self._thread: threading.Thread | None = None

    def release(self, channel: str) -> None:
        """Stop holding ``channel``: its ``result()`` has returned (a later call reads the result afresh)."""
        with self._lock:
            self._subs.release(channel)

    def hold(self, owners: Sequence[tuple[object, str]]) -> None:
        """Subscribe the channels of just-submitted tasks, each held while its owner (the handle) lives, when
        ``result()`` calls are expected. Never raises: the tasks are submitted already."""
        if not self.wanted():
            return
        with self._lock:
            if self._closed:
                return
            pubsub = self._ready()
            new = self._subs.hold([channel for _, channel in owners])
            try:
                if new:
                    pubsub.subscribe(*new)
            except READ_ERRORS as e:
                hold_failed(new, self._subs, e)
                return
            self._start_reader()
        self._tie(owners)

    def wait(self, channel: str, fetch: Callable[[], bytes | None], deadline: float | None) -> bytes:
        """The result record announced on ``channel``, or the first one ``fetch`` finds after a wake-up.

        A wake-up that came before the deadline is acted on even when the deadline has passed since (a zero
        timeout still returns a kept announcement, or what the read that a held channel's waiter makes finds),
        and a wait that ends at the deadline reads once more before ``ResultTimeout``.

        Raises:
            ResultTimeout: ``deadline`` (monotonic) passed first.
            RedisUnavailable: Redis could not be reached.
        """
        woken = threading.Event()
        waiter = Waiter(channel, woken.set)
        try:
            self._join(waiter)
            while True:
                if not woken.is_set():  # woken already (at join, say): read before the deadline is looked at
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
            thread.join(STOP_JOIN_S)
        if pubsub is not None:
            pubsub.close()

    def _join(self, waiter: Waiter) -> None:
        with self._lock:
            if self._closed:
                raise DispatcherClosed("this dispatcher is closed")
            pubsub = self._ready()
            try:
                if self._subs.join(waiter):
                    # Sent under the lock, so a SUBSCRIBE and the reader's UNSUBSCRIBE of the same channel go out
                    # in the order the bookkeeping decided them.
                    pubsub.subscribe(waiter.channel)
            except BaseException:
                self._subs.leave(waiter)
                raise
            self._start_reader()

    def _ready(self) -> redis.client.PubSub | ShardedPubSub:
        # Under the lock.
        if self._pubsub is None:
            if isinstance(self._client, redis.RedisCluster):
                self._pubsub = ShardedPubSub(self._client)
            else:
                self._pubsub = self._client.pubsub()
        return self._pubsub

    def _start_reader(self) -> None:
        # Under the lock. Recorded once started: a signal handler that raises (the CLI turns SIGTERM into
        # KeyboardInterrupt) can interrupt start() while it waits for the thread, and close() then joined a thread
        # that was never started ("cannot join thread before it is started": a traceback, not exit 130).
        if self._thread is None:
            thread = threading.Thread(target=self._read, name="dispatcher-listener", daemon=True)
            thread.start()
            self._thread = thread

    def _read(self) -> None:
        try:
            self._read_until_idle()
        finally:
            with self._lock:
                if self._thread is threading.current_thread():  # not a reader started after this one
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
                    if self._closed or time.monotonic() - idle_since > LINGER_S:
                        return
                    idle = self._subs.take_idle()
                    if idle:
                        pubsub.unsubscribe(*idle)
                message = pubsub.get_message(timeout=POLL_S)
                failures = 0
            except Exception as e:  # redis-py raises more than RedisError while reconnecting or closing
                if self._closed:
                    return
                failures += 1
                report_lost(failures, e)
                with self._lock:
                    self._subs.wake_all()
                time.sleep(RECONNECT.delay_s(failures))
                continue
            if message is not None:
                with self._lock:
                    self._subs.deliver(message)


_LISTENERS: weakref.WeakSet[Listener] = weakref.WeakSet()
"""Every sync listener alive in this process, for the fork hook."""


def _after_fork_in_child() -> None:
    for listener in list(_LISTENERS):
        listener._fresh()


# A fork while a reader thread holds its listener's lock (it does so for each message and each UNSUBSCRIBE) left
# the child's lock held for good, so its result() hung past its own timeout: reset in the child, at the fork.
os.register_at_fork(after_in_child=_after_fork_in_child)


def report_lost(failures: int, error: BaseException) -> None:
    """Log the reader's lost connection once per outage (its first failure)."""
    if failures == 1:  # once per outage
        log.warning("result listener lost its connection error=%s; waiters re-read, reconnecting", error)
