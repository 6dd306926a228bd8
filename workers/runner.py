"""Running what a worker read: decode the entry, take its slot, run its handler, decide and record its outcome.

Every entry read takes a slot (``workers.slots``) until its outcome is recorded: the handler's result, a retry,
a dead letter (undecodable, expired, failed for good) or its release (deleted from the stream while pending).
The outcome goes to the settler, which records it in Redis in batches and then frees the slot.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from dispatcher.errors import DecodeError, HandlerTimeout, RateLimited, Reject
from dispatcher.errors import Retry as RetrySignal
from dispatcher.faults import Faults
from dispatcher.fleet import decide
from dispatcher.observe import metrics
from dispatcher.store import codec
from dispatcher.store.codec import Delivery, Fields
from dispatcher.store.keys import CapabilityKeys
from dispatcher.store.transitions import Release, Transition
from workers.breaker import Breaker
from workers.clock import ServerClock
from workers.executor import Executor
from workers.registry import Registry
from workers.settler import Settler
from workers.slots import Held, Phase, Slots

log = logging.getLogger(__name__)


class Runner:
    """Starts handlers for read entries and turns their outcomes into transitions for the settler."""

    def __init__(
        self,
        registry: Registry,
        ctx: decide.Context,
        slots: Slots,
        settler: Settler,
        breakers: Mapping[str, Breaker],
        executor: Executor,
        faults: Faults,
        on_free: Callable[[], None],
        clock: ServerClock | None = None,
    ) -> None:
        self.registry = registry
        self.ctx = ctx
        self.slots = slots
        self.settler = settler
        self.breakers = breakers
        self.executor = executor
        self.faults = faults
        self._on_free = on_free
        self._clock = clock or ServerClock()
        self._max_bytes = ctx.settings.max_payload_bytes
        self._metrics = {c: metrics.for_capability(c) for c in breakers}
        self._abandoned: set[Held] = set()
        # Checked once: at INFO (the default) a task costs no logging work at all; at DEBUG each logs two lines.
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._started: dict[Held, float] = {}
        """When each running task started, kept at DEBUG only (for the duration its end line gives)."""
        self.cancelled: list[asyncio.Future[Any]] = []
        """Handlers cancelled at shutdown (one that ignores its cancellation may still run)."""

    def start(self, keys: CapabilityKeys, entry_id: str, fields: Fields | None) -> bool:
        """Take a slot for a just-read entry and start its handler; False when it has nothing to run."""
        delivery = self._triage(keys, entry_id, fields, force=False)
        if delivery is None:
            return False
        if self.faults.active:
            self.faults.reach("after_read")
        capability = keys.capability
        key = (capability, entry_id)
        slot = self.slots.take(key, delivery)
        self.breakers[capability].started()
        measures = self._metrics[capability]
        measures.started += 1
        measures.inflight += 1
        # The entry id's first part is when Redis added it (ms, by Redis' clock, as is ``now``): its submit, or the
        # end of its delay or backoff. A lost wait (clock corrected meanwhile) is clamped at 0.
        measures.waited.observe(max(self._clock.now() - int(entry_id.partition("-")[0]) / 1000, 0.0))
        handler = self.registry.get(capability)
        assert handler is not None
        started = time.perf_counter()
        if self._debug:
            self._started[key] = started
            log.debug(
                "task started capability=%s task_id=%s attempt=%d entry_id=%s",
                capability,
                delivery.task.id,
                delivery.attempt,
                entry_id,
            )
        job: asyncio.Future[Any]
        if self.executor.in_thread(handler, delivery.task):
            # A sync handler's thread gives a future: its outcome is taken in a done callback, no task.
            job = self.executor.thread(handler, delivery.task)
            job.add_done_callback(functools.partial(self._finished, keys, key, delivery, started))
        else:  # one task, which takes the outcome itself (cheaper than a task plus a done callback)
            run = self.executor.call(handler, delivery.task, self._stray_ended)
            job = asyncio.get_running_loop().create_task(self._run(keys, key, delivery, started, run, measures))
        slot.job = job
        return True

    def hand_back(self, keys: CapabilityKeys, entry_id: str, fields: Fields | None) -> None:
        """Give an entry read beyond the free slots straight back to the fleet, spending no attempt."""
        delivery = self._triage(keys, entry_id, fields, force=True)
        if delivery is not None:
            self.slots.take((keys.capability, entry_id), delivery, Phase.SETTLING, force=True)
            self.settler.put(decide.hand_back(self.ctx, keys, delivery).transition)

    def _triage(self, keys: CapabilityKeys, entry_id: str, fields: Fields | None, force: bool) -> Delivery | None:
        """The entry's delivery if it has a handler to run; else record what becomes of it (its release, its
        dead letter) in a slot of its own and return None."""
        key = (keys.capability, entry_id)
        if not fields:  # deleted from the stream while pending: nothing to run, just release the PEL entry
            self.slots.take(key, None, Phase.SETTLING, force=force)
            self.settler.put(Release(keys, entry_id))
            return None
        try:
            delivery = codec.decode_entry(keys.capability, entry_id, fields, self._max_bytes)
        except DecodeError as e:
            log.warning(
                "undecodable entry dead-lettered capability=%s entry_id=%s error=%s",
                keys.capability,
                entry_id,
                e,
                extra={"capability": keys.capability, "entry_id": entry_id, "reason": "decode_error"},
            )
            self.slots.take(key, None, Phase.SETTLING, force=force)
            self._record(key, decide.undecodable(self.ctx, keys, entry_id, fields, e))
            return None
        expires_at = delivery.task.expires_at
        if expires_at is not None and self._clock.now() > expires_at:  # by Redis' clock, not this machine's
            self.slots.take(key, delivery, Phase.SETTLING, force=force)
            self._record(key, decide.dead(self.ctx, keys, delivery, "expired", None))
            return None
        return delivery

    async def _run(
        self,
        keys: CapabilityKeys,
        key: Held,
        delivery: Delivery,
        started: float,
        run: Awaitable[Any],
        measures: metrics.CapabilityMetrics,
    ) -> None:
        try:
            value = await run
        except asyncio.CancelledError:
            measures.inflight -= 1
            raise  # the worker is stopping: it hands the task back
        except BaseException as e:  # KeyboardInterrupt, SystemExit too: the failure of this task, not of the worker
            measures.inflight -= 1
            elapsed_s = time.perf_counter() - started
            measures.seconds.observe(elapsed_s)
            self._conclude(keys, key, delivery, None, e, elapsed_s)
            return
        measures.inflight -= 1
        elapsed_s = time.perf_counter() - started
        measures.seconds.observe(elapsed_s)
        self._conclude(keys, key, delivery, value, None, elapsed_s)

    def _finished(
        self, keys: CapabilityKeys, key: Held, delivery: Delivery, started: float, job: asyncio.Future[Any]
    ) -> None:
        measures = self._metrics[keys.capability]
        measures.inflight -= 1
        if key in self._abandoned:  # Redis gave its entry away meanwhile: only its stray slot is left to free
            self._abandoned.discard(key)
            self._stray_ended()
            return
        if job.cancelled():
            return  # the worker is stopping: it hands the task back
        elapsed_s = time.perf_counter() - started
        measures.seconds.observe(elapsed_s)
        error = job.exception()
        self._conclude(keys, key, delivery, job.result() if error is None else None, error, elapsed_s)

    def _conclude(
        self,
        keys: CapabilityKeys,
        key: Held,
        delivery: Delivery,
        value: Any,
        error: BaseException | None,
        elapsed_s: float,
    ) -> None:
        """Decide and record the outcome. Whatever goes wrong on the way fails this task with a clear error (it
        never leaks the slot): a bug dead-letters it as ``worker_error``; running out of memory, which says more
        about the process than about this task (another task may have taken the memory), fails only the attempt,
        so it is retried by its policy."""
        try:
            if error is None:
                outcome = self._succeeded(keys, key, delivery, value)
            else:
                outcome = self._failed_attempt(keys, key, delivery, error)
        except Exception as e:
            fallback = RuntimeError(f"the worker could not record this task's outcome ({type(e).__name__})")
            if isinstance(e, MemoryError):  # the worker's state (any task may be the one that needed memory)
                log.warning("out of memory recording an outcome, failing the attempt task_id=%s", delivery.task.id)
                outcome = self._record(key, decide.failed(self.ctx, keys, delivery, fallback))
            else:
                log.exception("outcome not recorded as decided, failing the task task_id=%s", delivery.task.id)
                outcome = self._record(key, decide.dead(self.ctx, keys, delivery, "worker_error", fallback))
        if log.isEnabledFor(logging.DEBUG):  # one line per task: DEBUG only, and never the payload
            log.debug(
                "task finished capability=%s task_id=%s attempt=%d outcome=%s duration_s=%.6f",
                keys.capability,
                delivery.task.id,
                delivery.attempt,
                outcome,
                elapsed_s,
                extra={
                    "capability": keys.capability,
                    "task_id": delivery.task.id,
                    "attempt": delivery.attempt,
                    "outcome": outcome,
                    "duration_s": round(elapsed_s, 6),
                    "consumer": self.ctx.consumer,
                },
            )

    def _succeeded(self, keys: CapabilityKeys, key: Held, delivery: Delivery, value: Any) -> str:
        if self.faults.active:
            self.faults.record(delivery.task.id, self.ctx.consumer)
            self.faults.reach("after_handler")
        if self.breakers[keys.capability].succeeded():  # a trial closed the circuit
            metrics.CIRCUIT_OPEN.labels(keys.capability).set(0)
            log.warning(
                "circuit closed capability=%s consumer=%s",
                keys.capability,
                self.ctx.consumer,
                extra={"capability": keys.capability, "consumer": self.ctx.consumer},
            )
            self._on_free()  # the reader may be waiting on it: let it read now
        return self._record(key, decide.succeeded(self.ctx, keys, delivery, value))

    def _failed_attempt(self, keys: CapabilityKeys, key: Held, delivery: Delivery, error: BaseException) -> str:
        """A handler's failure, whatever it is, fails the attempt; only a failure that says something about the
        worker counts against its circuit (not Retry, Reject or a declared input error)."""
        if isinstance(error, HandlerTimeout) and error.thread_running:
            self.slots.stray()  # the thread still runs: it holds a slot of its own until it ends
        handler = self.registry.get(keys.capability)
        input_error = handler is not None and isinstance(error, handler.input_errors)
        if input_error or isinstance(error, RetrySignal | Reject | RateLimited):
            self.breakers[keys.capability].neutral()
        else:
            self._failed(keys.capability, delivery, error)
        return self._record(key, decide.failed(self.ctx, keys, delivery, error, input_error))

    def _record(self, key: Held, decision: decide.Decision) -> str:
        """Count and hand the decision to the settler; returns its outcome."""
        capability = key[0]
        self._metrics[capability].outcomes[decision.outcome] += 1
        if decision.outcome == "dead":
            metrics.DEAD_LETTERS.labels(capability, decision.reason).inc()
            if decision.reason != "decode_error":  # logged with its error where the entry failed to decode
                log.warning(
                    "dead letter capability=%s task_id=%s entry_id=%s reason=%s",
                    capability,
                    getattr(decision.transition, "task_id", "-"),
                    key[1],
                    decision.reason,
                )
        if self._debug:
            self._log_end(key, decision)
        self.slots.settling(key)
        self.settler.put(decision.transition)
        return decision.outcome

    def _log_end(self, key: Held, decision: decide.Decision) -> None:
        started = self._started.pop(key, None)
        slot = self.slots.held.get(key)
        delivery = slot.delivery if slot is not None else None
        log.debug(
            "task ended capability=%s task_id=%s attempt=%s outcome=%s reason=%s duration_s=%s",
            key[0],
            delivery.task.id if delivery is not None else "-",
            delivery.attempt if delivery is not None else "-",
            decision.outcome,
            decision.reason or "-",
            "-" if started is None else f"{time.perf_counter() - started:.6f}",
        )

    def _failed(self, capability: str, delivery: Delivery, error: BaseException) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "handler failed capability=%s task_id=%s attempt=%d error=%s: %r",
                capability,
                delivery.task.id,
                delivery.attempt,
                type(error).__name__,
                decide.message_of(error)[:300],
                extra={
                    "capability": capability,
                    "task_id": delivery.task.id,
                    "attempt": delivery.attempt,
                    "error": type(error).__name__,
                    "consumer": self.ctx.consumer,
                },
            )
        breaker = self.breakers[capability]
        if breaker.failed(delivery.task.id):
            metrics.CIRCUIT_OPEN.labels(capability).set(1)
            log.warning(
                "circuit open capability=%s consumer=%s failures=%d last_error=%s: this worker pulls none of its "
                "tasks for %.0f s (they wait in the stream for other workers), then tries one",
                capability,
                self.ctx.consumer,
                breaker.failures,
                type(error).__name__,
                breaker.seconds_until_trial(),
                extra={"capability": capability, "consumer": self.ctx.consumer, "error": type(error).__name__},
            )

    def _stray_ended(self) -> None:
        self.slots.stray_ended()
        self._on_free()

    def settled(self, recorded: Sequence[Transition]) -> None:
        """These entries' outcomes are recorded (or given up): they leave this worker's hands, freeing their slots."""
        release = self.slots.release
        freed = False
        for t in recorded:
            if release((t.keys.capability, t.entry_id)) is not None:
                freed = True
        if freed:
            self._on_free()

    def abandon(self, lost: Sequence[Held]) -> int:
        """Give up running entries that Redis no longer holds for this consumer (their results would be refused):
        an async handler is cancelled; a sync handler's thread runs on as a stray that keeps a slot until it
        returns, so the worker never runs more threads than slots. Returns how many were abandoned."""
        for key in lost:
            slot = self.slots.release(key)
            if slot is None or slot.job is None:
                continue
            log.warning(
                "task abandoned capability=%s task_id=%s entry_id=%s reason=Redis no longer holds its entry for this "
                "consumer (reclaimed after a missed heartbeat, or lost by Redis): its result would be refused",
                key[0],
                slot.delivery.task.id if slot.delivery is not None else "-",
                key[1],
            )
            handler = self.registry.get(key[0])
            if (
                handler is not None
                and slot.delivery is not None
                and self.executor.in_thread(handler, slot.delivery.task)
            ):
                self.slots.stray()
                self._abandoned.add(key)
            else:
                slot.job.cancel()
        if lost:
            self._on_free()
        return len(lost)

    def stop_running(self, keys: Mapping[str, CapabilityKeys]) -> int:
        """Cancel every handler still running and hand its task back to the fleet; returns how many."""
        count = 0
        for key, slot in list(self.slots.running()):
            if slot.job is not None:
                slot.job.cancel()
                self.cancelled.append(slot.job)
            if slot.delivery is not None:
                self.slots.settling(key)
                self.settler.put(decide.hand_back(self.ctx, keys[key[0]], slot.delivery).transition)
                count += 1
        return count

    def jobs(self) -> list[asyncio.Task[None]]:
        """The asyncio tasks of the handlers running now."""
        return [slot.job for _, slot in self.slots.running() if slot.job is not None]
