"""The asyncio driver of the result listener: every ``result()`` of an ``AsyncDispatcher`` waits on one pub/sub
connection, read by one task. The protocol, and the sync driver, are in ``dispatcher.producer.listener``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.client

from dispatcher.errors import DispatcherClosed
from dispatcher.producer.listener import (
    POLL_S,
    READ_ERRORS,
    RECONNECT,
    STOP_JOIN_S,
    Holding,
    hold_failed,
    report_lost,
)
from dispatcher.producer.sharded_pubsub import AsyncShardedPubSub
from dispatcher.producer.subscriptions import Subscriptions, Waiter, remaining_s
from dispatcher.store.connection import AsyncClient
from dispatcher.store.gateway import wrap_error


class AsyncListener(Holding):
    """The asyncio driver: a reader task, started on demand, ending as soon as no one waits or holds."""

    def __init__(self, client: AsyncClient, url: str) -> None:
        self._client = client
        self._url = url
        self._subs = Subscriptions()
        self._lock = asyncio.Lock()
        self._pubsub: redis.asyncio.client.PubSub | AsyncShardedPubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def wait(self, channel: str, fetch: Callable[[], Awaitable[bytes | None]], deadline: float | None) -> bytes:
        """See ``Listener.wait``."""
        woken = asyncio.Event()
        waiter = Waiter(channel, woken.set)
        try:
            await self._join(waiter)
            while True:
                if not woken.is_set():  # see Listener.wait
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining_s(deadline)):
                            await woken.wait()
                woken.clear()
                if waiter.record is not None:
                    return waiter.record
                record = await _read_unless_announced(fetch, woken, waiter)
                if record is not None:
                    return record
        except redis.exceptions.RedisError as e:
            raise wrap_error(e, self._url) from e
        finally:
            self._subs.leave(waiter)

    async def aclose(self) -> None:
        """Stop the reader and close the pub/sub connection."""
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            # redis-py's pub/sub read can lose a cancellation that races with its own read timeout (seen on
            # Python 3.11: the reader read on): the reader also stops at its next turn, within POLL_S, on the flag.
            reader.cancel()
            await asyncio.wait([reader], timeout=STOP_JOIN_S)
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None

    def release(self, channel: str) -> None:
        """See ``Listener.release``."""
        self._subs.release(channel)

    async def hold(self, owners: Sequence[tuple[object, str]]) -> None:
        """See ``Listener.hold``."""
        if not self.wanted() or self._closed:
            return
        async with self._lock:
            pubsub = self._ready()
            new = self._subs.hold([channel for _, channel in owners])
            try:
                if new:
                    await pubsub.subscribe(*new)
            except READ_ERRORS as e:
                hold_failed(new, self._subs, e)
                return
        self._start_reader(pubsub)
        self._tie(owners)

    async def _join(self, waiter: Waiter) -> None:
        if self._closed:
            raise DispatcherClosed("this dispatcher is closed")
        async with self._lock:
            pubsub = self._ready()
            try:
                if self._subs.join(waiter):
                    await pubsub.subscribe(waiter.channel)
            except BaseException:
                self._subs.leave(waiter)
                raise
        self._start_reader(pubsub)

    def _ready(self) -> redis.asyncio.client.PubSub | AsyncShardedPubSub:
        if self._pubsub is None:
            if isinstance(self._client, redis.asyncio.RedisCluster):
                self._pubsub = AsyncShardedPubSub(self._client)
            else:
                self._pubsub = self._client.pubsub()
        return self._pubsub

    def _start_reader(self, pubsub: redis.asyncio.client.PubSub | AsyncShardedPubSub) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(pubsub))

    async def _read(self, pubsub: redis.asyncio.client.PubSub | AsyncShardedPubSub) -> None:
        failures = 0
        while True:
            try:
                async with self._lock:
                    # Decided and sent under the lock: a waiter re-joining the channel meanwhile re-subscribes
                    # after this, not before.
                    idle = self._subs.take_idle()
                    if idle:
                        await pubsub.unsubscribe(*idle)
                if self._closed:
                    return
                if not self._subs.busy:  # no await between this check and the exit: a joiner starts a new reader
                    self._reader = None
                    return
                message = await pubsub.get_message(timeout=POLL_S)
                failures = 0
            except READ_ERRORS as e:
                failures += 1
                report_lost(failures, e)
                self._subs.wake_all()
                await asyncio.sleep(RECONNECT.delay_s(failures))
                continue
            if message is not None:
                self._subs.deliver(message)


async def _read_unless_announced(
    fetch: Callable[[], Awaitable[bytes | None]], woken: asyncio.Event, waiter: Waiter
) -> bytes | None:
    """``fetch()``, or the announcement if the reader hands it over first: it may already be in the socket
    buffer, behind this very task in the loop. The read is left to finish on its own then (cancelling a command
    would close its connection)."""
    read = asyncio.ensure_future(fetch())
    read.add_done_callback(_retrieve)  # an abandoned read's error is not reported as never retrieved
    wake = asyncio.ensure_future(woken.wait())
    try:
        await asyncio.wait((read, wake), return_when=asyncio.FIRST_COMPLETED)
    finally:
        wake.cancel()
    if waiter.record is not None and not read.done():
        return waiter.record
    return await read  # a wake-up without a record (a confirmation) leaves ``woken`` set: the caller reads again


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
