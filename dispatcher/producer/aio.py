"""The asyncio producer API: ``AsyncDispatcher`` and ``AsyncTaskHandle`` (the same API with coroutines)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from dispatcher.errors import TaskNotFound
from dispatcher.producer.aio_listener import AsyncListener
from dispatcher.producer.shared import (
    ProducerCore,
    TaskInfo,
    build_task,
    check_result_kept,
    info_of,
    status_of,
    value_or_raise,
)
from dispatcher.settings import Settings
from dispatcher.store import flow, limits, streams
from dispatcher.store.connection import AsyncClient, make_shared_async_client
from dispatcher.store.gateway import AsyncGateway
from dispatcher.task import Status, Task


class AsyncTaskHandle:
    """A submitted task, for asyncio code: ``await handle.status()``, ``await handle.result()``."""

    def __init__(
        self,
        dispatcher: AsyncDispatcher,
        task_id: str,
        capability: str,
        store_result: bool = True,
    ) -> None:
        self.id = task_id
        self.capability = capability
        self.store_result = store_result
        """False when the task was submitted with ``store_result=False``: ``result()`` raises ``ResultNotStored``."""
        self._dispatcher = dispatcher

    def __repr__(self) -> str:
        return f"AsyncTaskHandle(id={self.id!r}, capability={self.capability!r})"

    async def status(self) -> Status:
        """See ``TaskHandle.status``."""
        d = self._dispatcher
        return status_of(await d.gateway.run(streams.lookup(d.core.keys(self.capability), self.id)), d.core)

    async def info(self) -> TaskInfo:
        """See ``TaskHandle.info``."""
        d = self._dispatcher
        found, placed = await d.gateway.run(streams.describe(d.core.keys(self.capability), self.id))
        return info_of(self.id, self.capability, found, placed, d.core)

    async def result(self, timeout_s: float | None = None) -> Any:
        """See ``TaskHandle.result``."""
        check_result_kept(self.id, self.store_result)
        d = self._dispatcher
        keys = d.core.keys(self.capability)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s

        async def fetch() -> bytes | None:
            return await d.gateway.run(streams.get_result(keys, self.id))

        channel = keys.channel(self.id)
        d.listener.expect()
        record = None if d.listener.holds(channel) else await fetch()
        if record is None:
            record = await d.listener.wait(channel, fetch, deadline)
        d.listener.release(channel)
        return value_or_raise(self.id, d.core.outcome(record))


class AsyncDispatcher:
    """``Dispatcher`` for asyncio: the same arguments, and coroutines in place of methods."""

    def __init__(self, settings: Settings | None = None, client: AsyncClient | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.client = client or make_shared_async_client(self.settings)
        self.gateway = AsyncGateway(self.client, self.settings.redis_url)
        self.core = ProducerCore(self.settings)
        self.listener = AsyncListener(self.client, self.settings.redis_url)

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> AsyncDispatcher:
        """An async dispatcher for Redis at ``url``."""
        return cls(Settings.from_env(redis_url=url, **settings))

    async def submit(
        self,
        task: Task | str,
        payload: Any = None,
        /,
        *,
        delay_s: float | None = None,
        wait_replicas: int | None = None,
        **options: Any,
    ) -> AsyncTaskHandle:
        """See ``Dispatcher.submit``."""
        return (await self.submit_many([build_task(task, payload, delay_s, options)], wait_replicas=wait_replicas))[0]

    async def submit_many(self, tasks: Iterable[Task], *, wait_replicas: int | None = None) -> list[AsyncTaskHandle]:
        """See ``Dispatcher.submit_many``."""
        tasks = list(tasks)
        batches = self.core.prepare(tasks)
        names, keyed = self.core.limit_names(tasks), self.core.keyed(tasks)
        if names or keyed:  # only tasks with rate limits or concurrency keys pay this round trip
            with self.core.round_trip(len(tasks), batch=False):
                states = await self.gateway.run(limits.exist(self.core.keyspace, names))
                caps = await self.gateway.run(flow.caps([self.core.keys(c) for c in keyed]))
            self.core.check_limits(tasks, names, states)
            self.core.check_caps(keyed, caps)
        new = self.core.unregistered(batches)
        if new:
            with self.core.round_trip(len(tasks), batch=False):
                await self.gateway.run(streams.register_capabilities(self.core.keyspace.capabilities, new))
            self.core.registered.update(new)
        with self.core.round_trip(len(tasks), batch=True):
            submitted, confirmed = await self.gateway.run(self.core.submit_op(batches, wait_replicas))
        handles = self.core.handles(
            tasks, batches, submitted, lambda t, task_id: AsyncTaskHandle(self, task_id, t.capability, t.store_result)
        )
        self.core.check_replicas(handles, confirmed, wait_replicas)
        if self.listener.wanted():
            await self.listener.hold(self.core.channels(handles))
        return handles

    async def consume(self, limit: str, units: int) -> None:
        """See ``Dispatcher.consume``."""
        taken = await self.gateway.run(limits.consume(self.core.limit_keys(limit), units))
        self.core.check_consume(limit, units, taken)

    async def handle(self, task_id: str, capability: str | None = None) -> AsyncTaskHandle:
        """See ``Dispatcher.handle``."""
        if capability is None:
            names = await self.gateway.run(streams.known_capabilities(self.core.keyspace.capabilities))
            found = await self.gateway.run(streams.find_capability([self.core.keys(n) for n in names], task_id))
            if found is None:
                raise TaskNotFound(f"no capability knows task {task_id}; pass capability= to wait for it")
            capability = found.capability
        return AsyncTaskHandle(self, task_id, capability)

    async def aclose(self) -> None:
        """Close the connections this dispatcher opened (and the one ``result()`` listens on)."""
        await self.listener.aclose()
        await self.client.aclose()

    async def __aenter__(self) -> AsyncDispatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
