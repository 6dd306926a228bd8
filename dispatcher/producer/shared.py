"""The producer logic that the sync and asyncio faces share: building, encoding and reading back tasks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from dispatcher.errors import (
    InvalidTask,
    PoolExhausted,
    RedisError,
    RedisUnavailable,
    ResultNotStored,
    TaskDead,
    TaskFailed,
)
from dispatcher.settings import Settings
from dispatcher.store import codec, replication, streams
from dispatcher.store.connection import mask_url
from dispatcher.store.gateway import Op, refused_whole, rewrap, wrap_error
from dispatcher.store.keys import CapabilityKeys, KeySpace, LimitKeys
from dispatcher.store.limits import LimitState, Taken
from dispatcher.store.streams import Enqueue, Lookup, Placed, Submitted
from dispatcher.store.wire import Delayed, Enqueued
from dispatcher.task import Status, Task, check_limit

_RESUBMIT = "submitting the same Task objects again adds none twice"


class Handle(Protocol):
    """What the core needs of a task handle (sync or asyncio)."""

    id: str
    capability: str
    store_result: bool


H = TypeVar("H", bound=Handle)


def build_task(task_or_capability: Task | str, payload: Any, delay_s: float | None, options: Mapping[str, Any]) -> Task:
    """A validated ``Task`` from ``submit``'s arguments.

    Raises:
        InvalidTask: bad capability, unknown option, or an option of the wrong type.
    """
    if isinstance(task_or_capability, Task):
        if payload is not None or options:
            raise InvalidTask("pass either a Task or a capability with payload and options, not both")
        task = task_or_capability
    else:
        try:
            task = Task(capability=task_or_capability, payload=payload, **options)
        except ValidationError as e:
            raise InvalidTask(_readable(e)) from None
        except TypeError as e:
            raise InvalidTask(str(e)) from None
    if delay_s is not None:
        if delay_s < 0:
            raise InvalidTask("delay_s must be >= 0")
        task = task.model_copy(update={"not_before": time.time() + delay_s})
    return task


def _readable(error: ValidationError) -> str:
    problems = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown option {where!r}")
        else:
            problems.append(f"{where}: {err['msg']}")
    return "invalid task: " + "; ".join(problems)


class ProducerCore:
    """Settings-bound helpers: key lookup, encoding to ``Enqueue`` items, decoding outcomes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keyspace = KeySpace(settings.prefix)
        self._keys: dict[str, CapabilityKeys] = {}
        self.registered: set[str] = set()

    def keys(self, capability: str) -> CapabilityKeys:
        """The (cached) keys of ``capability``."""
        found = self._keys.get(capability)
        if found is None:
            found = self._keys[capability] = self.keyspace.capability(capability)
        return found

    def prepare(self, tasks: Iterable[Task]) -> list[tuple[CapabilityKeys, list[Enqueue]]]:
        """Encode ``tasks`` grouped by capability, in first-seen order. Raises ``InvalidTask`` before any write,
        for an invalid task or for a task id that the batch repeats."""
        groups: dict[str, list[Enqueue]] = {}
        seen: dict[str, int] = {}
        for i, task in enumerate(tasks):
            first = seen.setdefault(task.id, i)
            if first != i:
                raise InvalidTask(
                    f"tasks {first} and {i} of the batch have the same id {task.id!r}: the batch would queue it once;"
                    " build one Task per item ([Task(...) for _ in range(n)], not [Task(...)] * n)"
                )
            blob = codec.encode_task(task, self.settings.max_payload_bytes)
            # Sent as a delay, which the script adds to Redis' clock: only the difference of this host's clock
            # readings counts, so a producer whose clock is wrong still delays by what it was asked to.
            delay_ms = max(int((task.not_before - time.time()) * 1000), 0) if task.not_before else 0
            item = Enqueue(
                task.id,
                blob,
                delay_ms,
                task.idempotency_key,
                codec.version_of(task),
                task.store_result,
                task.priority,
                limited=task.rate_limits is not None,
                keyed=task.rate_limits is None and task.concurrency_key is not None,
                fairness_key=task.fairness_key,
            )
            groups.setdefault(task.capability, []).append(item)
        return [(self.keys(cap), items) for cap, items in groups.items()]

    @staticmethod
    def limit_names(tasks: Sequence[Task]) -> list[str]:
        """The rate limits ``tasks`` take units from, sorted: each must exist before anything is written."""
        return sorted({name for t in tasks if t.rate_limits for name in t.rate_limits})

    @staticmethod
    def keyed(tasks: Sequence[Task]) -> list[str]:
        """The capabilities of ``tasks`` that have a ``concurrency_key``, sorted: each must have a cap set."""
        return sorted({t.capability for t in tasks if t.concurrency_key is not None})

    @staticmethod
    def check_caps(keyed: Sequence[str], caps: Sequence[int | None]) -> None:
        """Raise ``InvalidTask`` for a capability whose tasks have a ``concurrency_key`` but that has no cap."""
        for capability, cap in zip(keyed, caps, strict=True):
            if cap is None:
                raise InvalidTask(
                    f"capability {capability!r} has no per-key concurrency cap: set one with"
                    f" 'dispatcher limits set-concurrency {capability} --per-key N'"
                )

    @staticmethod
    def check_limits(tasks: Sequence[Task], names: Sequence[str], states: Sequence[LimitState | None]) -> None:
        """Raise ``InvalidTask`` for a limit that does not exist, or for more units than a limit's burst (they
        would never fit): refused, nothing written. Limits are never created on first use: a limit has no rate
        until ``dispatcher limits set`` gives it one."""
        found = dict(zip(names, states, strict=True))
        for task in tasks:
            for name, units in (task.rate_limits or {}).items():
                state = found[name]
                if state is None:
                    raise InvalidTask(
                        f"task {task.id}: unknown rate limit {name!r}: create it with"
                        f" 'dispatcher limits set {name} --rate N/min'"
                    )
                if units > state.burst:
                    raise InvalidTask(
                        f"task {task.id}: {units} units of {name!r} exceed its burst of {state.burst}: they never fit"
                    )

    def limit_keys(self, limit: str) -> LimitKeys:
        """The key of the rate limit ``limit``; raises ``InvalidTask`` for a name that is not valid."""
        try:
            return self.keyspace.limit(check_limit(limit))
        except ValueError as e:
            raise InvalidTask(str(e)) from None

    @staticmethod
    def check_consume(limit: str, units: int, taken: Taken) -> None:
        """Raise ``InvalidTask`` when a ``consume`` found no such limit."""
        if taken is Taken.UNKNOWN:
            raise InvalidTask(f"unknown rate limit {limit!r}: nothing consumed")

    def unregistered(self, batches: list[tuple[CapabilityKeys, list[Enqueue]]]) -> list[str]:
        """Capabilities of ``batches`` this process has not yet added to the fleet-wide set."""
        return [k.capability for k, _ in batches if k.capability not in self.registered]

    def handles(
        self,
        tasks: Sequence[Task],
        batches: list[tuple[CapabilityKeys, list[Enqueue]]],
        submitted: Submitted,
        make: Callable[[Task, str], H],
    ) -> list[H]:
        """One handle per task in input order, ``make(task, task id)``; a deduplicated task's handle names the task
        that existed (the same id, or the first task of its idempotency key).

        ``submitted`` follows ``batches`` (grouped by capability); ``tasks`` is the input order ``prepare`` saw.

        Raises:
            RedisFull, RedisUnavailable, RedisError: a script call of the batch failed; ``error.submitted`` holds
                the handles of the tasks that were written, in input order, and the message says how many.
        """
        per_capability: dict[str, Iterator[Enqueued | None]] = {}
        start = 0
        for keys, items in batches:
            per_capability[keys.capability] = iter(submitted.enqueued[start : start + len(items)])
            start += len(items)
        handles = []
        for task in tasks:
            enqueued = next(per_capability[task.capability])
            if enqueued is not None:
                handles.append(make(task, enqueued.task_id))
        if submitted.errors:
            raise self._failed_calls(submitted.errors, handles, len(tasks)) from submitted.errors[0]
        return handles

    def submit_op(
        self, batches: list[tuple[CapabilityKeys, list[Enqueue]]], wait_replicas: int | None
    ) -> Op[tuple[Submitted, int]]:
        """The submit of ``batches``, followed by ``WAIT`` when replicas must confirm it (``wait_replicas``, by
        default the setting); returns what was submitted and how many replicas confirmed it (0 when not asked)."""
        replicas = self.settings.wait_replicas if wait_replicas is None else wait_replicas
        op = streams.submit_batch(batches, self.ttl_ms(), self.window())
        if replicas <= 0:
            return (yield from op), 0
        timeout_ms = max(int(self.settings.wait_replicas_timeout_s * 1000), 1)
        return (yield from replication.confirmed(op, replicas, timeout_ms))

    def check_replicas(self, handles: list[Any], confirmed: int, wait_replicas: int | None) -> None:
        """Raise ``RedisUnavailable`` (``error.submitted`` = ``handles``) when fewer replicas than asked confirmed
        the submit within ``wait_replicas_timeout_s``: the tasks are written on the primary, but a failover now
        could lose them; never a success that was not confirmed."""
        wanted = self.settings.wait_replicas if wait_replicas is None else wait_replicas
        if wanted > 0 and confirmed < wanted:
            error = RedisUnavailable(
                f"Redis at {mask_url(self.settings.redis_url)}: {len(handles)} task(s) written on the primary but "
                f"confirmed by {confirmed} of wait_replicas={wanted} replicas within "
                f"{self.settings.wait_replicas_timeout_s} s (error.submitted); a failover now could lose them"
            )
            error.submitted = handles
            raise error

    def _failed_calls(self, errors: list[Exception], written: list[Any], total: int) -> RedisError:
        said = f"{len(written)} of {total} tasks were submitted (error.submitted); "
        if not all(refused_whole(e) for e in errors):
            said += f"a failed script call may have written some of the others: {_RESUBMIT}"
        elif written:
            said += "the others were not written"  # each failed call wrote nothing
        else:
            said = f"none of the {total} tasks was written"
        error = wrap_error(errors[0], self.settings.redis_url, said)
        if not isinstance(error, RedisError):  # not a reply of Redis's: never seen
            error = RedisError(f"{error}; {said}")
        error.submitted = written
        return error

    @contextlib.contextmanager
    def round_trip(self, total: int, *, batch: bool) -> Iterator[None]:
        """Make a ``RedisError`` raised inside say what of the ``total`` tasks was written: none before the batch
        is sent (``batch=False``: registering their capabilities) or when no connection came free (every send of
        a submit takes one first; a send after the first one only re-sends calls refused as NOSCRIPT, which ran
        nothing); during its round trip, not known."""
        try:
            yield
        except RedisError as e:
            written: list[Any] | None
            if batch and not isinstance(e, PoolExhausted):
                written, said = None, f"it is not known which of the {total} tasks were written: {_RESUBMIT}"
            else:
                written, said = [], f"none of the {total} tasks was written"
            error = rewrap(e, self.settings.redis_url, said)
            error.submitted = written
            raise error from e.__cause__ or e

    def channels(self, handles: Sequence[Handle]) -> list[tuple[Handle, str]]:
        """(handle, result channel) of each handle whose task keeps a result: what the listener may hold."""
        return [(h, self.keys(h.capability).channel(h.id)) for h in handles if h.store_result]

    def window(self) -> int:
        """Admission window of tasks with a priority (``Settings.flow_window``)."""
        return self.settings.flow_window

    def ttl_ms(self) -> int:
        """Idempotency-key TTL in ms."""
        return int(self.settings.idempotency_ttl_s * 1000)

    def outcome(self, record: bytes) -> codec.Outcome:
        """Decode a result record."""
        return codec.decode_outcome(record, codec.result_limit(self.settings.max_payload_bytes))


def status_of(found: Lookup, core: ProducerCore) -> Status:
    """The status a ``Lookup`` means."""
    if found.result is not None:
        status = core.outcome(found.result).status
        return status if status in ("succeeded", "failed", "dead") else "unknown"  # type: ignore[return-value]
    if found.place is None:
        return "unknown"
    return "running" if found.running else "queued"


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What Redis knows of a task now (``TaskHandle.info()``); a field that does not apply to its state is None."""

    id: str
    capability: str
    status: Status
    """As ``status()``: ``queued`` (delayed ones too), ``running``, ``succeeded``, ``failed``, ``dead``, ``unknown``."""
    attempt: int | None = None
    """The attempt that runs or waits (1-based), or the one that produced the result."""
    reclaims: int | None = None
    """Times the task was taken back from a worker that died (unsettled tasks only)."""
    delayed: bool = False
    """Queued for later: a ``delay_s`` submit or a retry in backoff."""
    due_at: float | None = None
    """A delayed task: when it is due (epoch seconds, by Redis' clock)."""
    entry_id: str | None = None
    """A queued or running task: its entry in the capability's stream."""
    worker: str | None = None
    """The consumer that holds a running task, or the one that produced the result."""
    finished_at: float | None = None
    reason: str | None = None
    """A dead task: why it was dead-lettered (``max_retries``, ``rejected``, ``poison``, ...)."""
    error_type: str | None = None
    error_message: str | None = None


def info_of(task_id: str, capability: str, found: Lookup, placed: Placed, core: ProducerCore) -> TaskInfo:
    """The ``TaskInfo`` that a ``describe`` reading means."""
    status = status_of(found, core)
    if found.result is not None:
        outcome = core.outcome(found.result)
        failed = outcome.status != "succeeded"
        return TaskInfo(
            task_id,
            capability,
            status,
            attempt=outcome.attempt,
            worker=outcome.worker or None,
            finished_at=outcome.finished_at or None,
            reason=outcome.reason or None,
            error_type=outcome.error_type if failed else None,
            error_message=outcome.error_message if failed else None,
        )
    return TaskInfo(
        task_id,
        capability,
        status,
        attempt=placed.attempt,
        reclaims=placed.reclaims,
        delayed=isinstance(found.place, Delayed) and placed.due_ms is not None,  # else: waiting for the admitter
        due_at=None if placed.due_ms is None else placed.due_ms / 1000,
        entry_id=found.place if isinstance(found.place, str) else None,
        worker=found.consumer,
    )


def check_result_kept(task_id: str, store_result: bool) -> None:
    """Raise ``ResultNotStored`` for a task submitted with ``store_result=False``: its ``result()`` would wait for
    a record that is never written."""
    if not store_result:
        raise ResultNotStored(
            f"task {task_id} was submitted with store_result=False: no result is stored or announced, so "
            "result() has nothing to wait for (status() says queued or running until it settles, then unknown)"
        )


def value_or_raise(task_id: str, outcome: codec.Outcome) -> Any:
    """The handler's return value, or ``TaskFailed``/``TaskDead`` for a failed or dead task."""
    if outcome.status == "succeeded":
        return outcome.value
    if outcome.status == "dead":
        raise TaskDead(task_id, outcome.reason, outcome.error_type, outcome.error_message, outcome.traceback)
    raise TaskFailed(task_id, outcome.error_type, outcome.error_message, outcome.traceback)
