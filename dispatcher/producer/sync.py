"""The sync producer API: ``Dispatcher``, ``TaskHandle`` and the module-level ``submit()``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from dispatcher.errors import TaskNotFound
from dispatcher.producer.listener import Listener
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
from dispatcher.store.connection import SyncClient, make_shared_client
from dispatcher.store.gateway import Gateway
from dispatcher.task import Status, Task


class TaskHandle:
    """A submitted task: its ``id``, ``capability``, ``status()`` and ``result()``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
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
        return f"TaskHandle(id={self.id!r}, capability={self.capability!r})"

    def status(self) -> Status:
        """``queued``, ``running``, ``succeeded``, ``failed``, ``dead``, or ``unknown`` (never seen, or expired)."""
        d = self._dispatcher
        return status_of(d.gateway.run(streams.lookup(d.core.keys(self.capability), self.id)), d.core)

    def info(self) -> TaskInfo:
        """What Redis knows of the task now: its ``status()``, attempt, worker, due time, error (``TaskInfo``)."""
        d = self._dispatcher
        found, placed = d.gateway.run(streams.describe(d.core.keys(self.capability), self.id))
        return info_of(self.id, self.capability, found, placed, d.core)

    def result(self, timeout_s: float | None = None) -> Any:
        """Block until the task settles (woken by a notification, no busy polling) and return its value.

        A zero ``timeout_s`` returns a result that is stored already. A handle re-attached with ``handle()``
        waits even for a task submitted with ``store_result=False`` (the option is known only at submit).

        Raises:
            ResultNotStored: at once, for a task this handle submitted with ``store_result=False``.
            TaskFailed: the handler failed (``TaskDead`` when it was dead-lettered).
            ResultTimeout: ``timeout_s`` elapsed first.
            RedisUnavailable: Redis could not be reached.
        """
        check_result_kept(self.id, self.store_result)
        d = self._dispatcher
        keys = d.core.keys(self.capability)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s

        def fetch() -> bytes | None:
            return d.gateway.run(streams.get_result(keys, self.id))

        channel = keys.channel(self.id)
        d.listener.expect()
        record = None if d.listener.holds(channel) else fetch()  # a held channel's waiter reads once itself
        if record is None:
            record = d.listener.wait(channel, fetch, deadline)
        d.listener.release(channel)
        return value_or_raise(self.id, d.core.outcome(record))


class Dispatcher:
    """Submits tasks and re-attaches to them, over a sync Redis client.

    Args:
        settings: the settings to use; by default read from the environment.
        client: an already configured ``redis.Redis`` (decode_responses must be off); by default one is made
            from ``settings.redis_url`` whose pool many threads can share: at most ``max_connections``, and a
            caller that finds them all in use waits up to ``pool_timeout_s`` for one, then raises
            ``PoolExhausted``. Nothing connects until the first command.
    """

    def __init__(self, settings: Settings | None = None, client: SyncClient | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.client = client or make_shared_client(self.settings)
        self.gateway = Gateway(self.client, self.settings.redis_url)
        self.core = ProducerCore(self.settings)
        self.listener = Listener(self.client, self.settings.redis_url)

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> Dispatcher:
        """A dispatcher for Redis at ``url`` (``redis://``, ``rediss://``, ``redis://user:password@...``)."""
        return cls(Settings.from_env(redis_url=url, **settings))

    def submit(
        self,
        task: Task | str,
        payload: Any = None,
        /,
        *,
        delay_s: float | None = None,
        wait_replicas: int | None = None,
        **options: Any,
    ) -> TaskHandle:
        """Submit one task: ``submit(task)`` or ``submit("capability", payload, max_retries=1, ...)``.

        ``wait_replicas`` (by default the setting) returns only once that many replicas confirmed the submit
        (``WAIT``), else raises ``RedisUnavailable`` with ``error.submitted`` (see ``store/replication.py``).

        Raises:
            InvalidTask: bad capability, unknown option, unencodable or oversized payload, or one a worker would
                refuse (nothing written).
            RedisUnavailable, RedisFull: Redis could not take the task (see ``submit_many``).
        """
        return self.submit_many([build_task(task, payload, delay_s, options)], wait_replicas=wait_replicas)[0]

    def submit_many(self, tasks: Iterable[Task], *, wait_replicas: int | None = None) -> list[TaskHandle]:
        """Submit many tasks in one round trip; handles in input order.

        Every task is validated and encoded before anything is written. The round trip carries one submit script
        call per 500 tasks of a capability, each atomic, so Redis can refuse a batch in part: when it fills
        mid-batch, the calls before that point are written and the rest are not. Submitting the same ``Task``
        objects again (the same ids) adds none of them twice: a task whose id is queued, delayed or running, or
        whose result is kept, is not added again (one with ``store_result=False`` that has already run is not
        remembered, and runs again).

        Raises:
            InvalidTask: a task is invalid, or the batch repeats a task id (nothing written).
            RedisFull, RedisUnavailable, RedisError: Redis did not take the whole batch. ``error.submitted``
                holds the handles of the tasks that were written (in input order; ``[]`` for none), and the message
                says how many: "Redis ... is full (maxmemory reached): 2000 of 5000 tasks were submitted
                (error.submitted); the others were not written". It is ``None`` when that cannot be known (the
                connection was lost during the round trip): submit the same ``Task`` objects again.
        """
        tasks = list(tasks)
        batches = self.core.prepare(tasks)
        names, keyed = self.core.limit_names(tasks), self.core.keyed(tasks)
        if names or keyed:  # only tasks with rate limits or concurrency keys pay this round trip
            with self.core.round_trip(len(tasks), batch=False):
                states = self.gateway.run(limits.exist(self.core.keyspace, names))
                caps = self.gateway.run(flow.caps([self.core.keys(c) for c in keyed]))
            self.core.check_limits(tasks, names, states)
            self.core.check_caps(keyed, caps)
        new = self.core.unregistered(batches)
        if new:
            with self.core.round_trip(len(tasks), batch=False):
                self.gateway.run(streams.register_capabilities(self.core.keyspace.capabilities, new))
            self.core.registered.update(new)
        with self.core.round_trip(len(tasks), batch=True):
            submitted, confirmed = self.gateway.run(self.core.submit_op(batches, wait_replicas))
        handles = self.core.handles(
            tasks, batches, submitted, lambda t, task_id: TaskHandle(self, task_id, t.capability, t.store_result)
        )
        self.core.check_replicas(handles, confirmed, wait_replicas)
        if self.listener.wanted():
            self.listener.hold(self.core.channels(handles))
        return handles

    def handle(self, task_id: str, capability: str | None = None) -> TaskHandle:
        """Re-attach to a task by id. Without ``capability``, the known capabilities are searched for it;
        raises ``TaskNotFound`` when none does."""
        if capability is None:
            names = self.gateway.run(streams.known_capabilities(self.core.keyspace.capabilities))
            found = self.gateway.run(streams.find_capability([self.core.keys(n) for n in names], task_id))
            if found is None:
                raise TaskNotFound(f"no capability knows task {task_id}; pass capability= to wait for it")
            capability = found.capability
        return TaskHandle(self, task_id, capability)

    def consume(self, limit: str, units: int) -> None:
        """Debit ``units`` from the rate limit ``limit`` now (negative: refund), whatever its room: a handler that
        learns the true cost of a call afterwards corrects the estimate its task was admitted with, e.g.
        ``consume("openai-tpm", used - estimated)``. Raises ``InvalidTask`` for an unknown limit."""
        self.core.check_consume(limit, units, self.gateway.run(limits.consume(self.core.limit_keys(limit), units)))

    def close(self) -> None:
        """Close the connections this dispatcher opened (and the one ``result()`` listens on)."""
        self.listener.close()
        self.client.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: Dispatcher | None = None
_default_lock = threading.Lock()


def default_dispatcher() -> Dispatcher:
    """The process-wide dispatcher behind ``dispatcher.submit``, made from the environment on first use."""
    global _default  # noqa: PLW0603 - the lazily built default, as documented
    with _default_lock:
        if _default is None:
            _default = Dispatcher()
        return _default


def submit(task: Task | str, payload: Any = None, /, *, delay_s: float | None = None, **options: Any) -> TaskHandle:
    """Submit through the default dispatcher (``DISPATCHER_REDIS_URL``, ``REDIS_URL`` or localhost)."""
    return default_dispatcher().submit(task, payload, delay_s=delay_s, **options)
