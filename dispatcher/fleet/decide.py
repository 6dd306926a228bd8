"""What becomes of a task after its handler ran, or after its worker died: settle, retry with backoff, or bury.

Pure decisions: each function returns the typed transition (``dispatcher.store.transitions``) that records the
outcome, and what it means for logs and metrics. Nothing here talks to Redis; the worker's settler and the reaper
record the transitions in batches.
"""

from __future__ import annotations

import dataclasses
import time
import traceback as tb
from dataclasses import dataclass, field
from typing import Any

from dispatcher import errors
from dispatcher.errors import DecodeError, InvalidTask, Reject
from dispatcher.settings import Settings
from dispatcher.store import codec, wire
from dispatcher.store.codec import Delivery, Outcome
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.transitions import Bury, Letter, Requeue, Settle, Transition
from dispatcher.task import LIMIT_PATTERN, Task

RAW_LIMIT = 4096
"""Bytes of an undecodable entry kept in its dead letter."""


@dataclass(frozen=True, slots=True)
class Context:
    """What every decision needs: the settings, and the consumer that holds the entry."""

    settings: Settings
    consumer: str
    ttl_ms: int = field(init=False)
    """Result TTL in ms."""
    result_limit: int = field(init=False)
    """The largest result record a producer reads back."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttl_ms", int(self.settings.result_ttl_s * 1000))
        object.__setattr__(self, "result_limit", codec.result_limit(self.settings.max_payload_bytes))


@dataclass(frozen=True, slots=True)
class Decision:
    """A transition and what it means: ``outcome`` (succeeded, retried, dead, reclaimed, hung) and ``reason``."""

    transition: Transition
    outcome: str
    reason: str = ""


def succeeded(ctx: Context, keys: CapabilityKeys, d: Delivery, value: Any) -> Decision:
    """Store ``value`` as the result. A value msgpack cannot encode fails the task instead (``result_unencodable``),
    and so does one the producer could not read back (too large: ``result_too_large``; integer map keys, nesting
    too deep: ``result_unencodable``): no retry helps either."""
    record = None
    if d.task.store_result:
        try:
            record = codec.encode_success(value, d.attempt, ctx.consumer)
        except InvalidTask as e:
            return dead(ctx, keys, d, "result_unencodable", e)
        problem = codec.readable(record, ctx.result_limit)
        if problem:
            reason = "result_too_large" if problem.startswith("the result is") else "result_unencodable"
            return dead(ctx, keys, d, reason, InvalidTask(problem))
    return Decision(Settle(keys, d.entry_id, ctx.consumer, d.task.id, record, ctx.ttl_ms), "succeeded")


def failed(
    ctx: Context, keys: CapabilityKeys, d: Delivery, error: BaseException, input_error: bool = False
) -> Decision:
    """A handler raised ``error``: retry after backoff (or the delay ``Retry`` asked for), else dead-letter; a
    ``Reject`` or a declared ``input_error`` is dead-lettered as ``rejected`` at once (no retry helps bad input)."""
    if input_error or isinstance(error, Reject):
        return dead(ctx, keys, d, "rejected", error)
    if isinstance(error, errors.RateLimited):
        return rate_limited(ctx, keys, d, error)
    if d.attempt > d.task.max_retries:
        return dead(ctx, keys, d, "max_retries", error)
    if isinstance(error, errors.Retry) and error.delay_s is not None:
        delay_s = max(error.delay_s, 0.0)
    else:
        delay_s = ctx.settings.backoff.delay_s(d.attempt)
    return retry(ctx, keys, d, delay_s, d.attempt + 1, d.reclaims)


def retry(ctx: Context, keys: CapabilityKeys, d: Delivery, delay_s: float, attempt: int, reclaims: int) -> Decision:
    """Give the task back to the fleet as a fresh entry, now or ``delay_s`` from now by Redis' clock; a
    flow-controlled task into its waiting set when due (its lane), so the retry is admitted again."""
    requeue = _requeue(ctx, keys, d, attempt, reclaims, max(int(delay_s * 1000), 0))
    return Decision(dataclasses.replace(requeue, lane=lane_of(d.task)), "retried")


def rate_limited(ctx: Context, keys: CapabilityKeys, d: Delivery, error: errors.RateLimited) -> Decision:
    """A provider refused for quota: pause the limit fleet-wide and give the task back after ``retry_after_s``,
    spending no attempt. A limit name that is not valid pauses nothing (the task still waits)."""
    delay_ms = int(error.retry_after_s * 1000)
    limit = KeySpace(ctx.settings.prefix).limit(error.limit).state if LIMIT_PATTERN.match(str(error.limit)) else None
    requeue = _requeue(ctx, keys, d, d.attempt, d.reclaims, delay_ms, failed_attempt=False)
    return Decision(dataclasses.replace(requeue, pause_limit=limit, lane=lane_of(d.task)), "rate_limited", error.limit)


def lane_of(task: Task) -> str:
    """Where ``task`` waits again after a retry's backoff (``wire.lane``): a retry goes through the gates again.
    A hand-back has none, nor has a reclaim of a keyed task: they go straight onto the stream, keeping the permit
    they hold."""
    return wire.lane(
        task.priority, task.rate_limits is not None, task.concurrency_key is not None, task.fairness_key is not None
    )


def hand_back(ctx: Context, keys: CapabilityKeys, d: Delivery) -> Decision:
    """Give a task this worker will not run (shutting down, or read beyond its free slots) back to the fleet now,
    as it was: neither an attempt nor a reclaim is counted."""
    return Decision(_requeue(ctx, keys, d, d.attempt, d.reclaims, 0, failed_attempt=False), "handed_back")


def reclaim(ctx: Context, keys: CapabilityKeys, d: Delivery, only_if_owner_dead: bool) -> Decision:
    """Re-add a task whose worker died (or whose handler hung) now, counting the attempt and the reclaim.

    ``ctx.consumer`` is the entry's owner, whose hold (and, with ``only_if_owner_dead``, whose missing
    heartbeat) the script re-checks. A task with ``rate_limits`` and no ``concurrency_key`` goes through the limit
    gate again (its rerun calls the provider again); a keyed one goes straight onto the stream, keeping its
    permit, so that its key never gets a second task beside a worker that may still be alive (a hung handler, a
    paused worker).
    """
    transition = _requeue(ctx, keys, d, d.attempt + 1, d.reclaims + 1, 0, only_if_owner_dead)
    if d.task.rate_limits is not None and d.task.concurrency_key is None:
        transition = dataclasses.replace(transition, lane=lane_of(d.task))
    return Decision(transition, "reclaimed" if only_if_owner_dead else "hung")


def _requeue(
    ctx: Context,
    keys: CapabilityKeys,
    d: Delivery,
    attempt: int,
    reclaims: int,
    delay_ms: int,
    owner_dead: bool = False,
    failed_attempt: bool = True,
) -> Requeue:
    task_id, blob = d.task.id, d.blob
    return Requeue(
        keys,
        d.entry_id,
        ctx.consumer,
        task_id,
        blob,
        d.version,
        attempt,
        reclaims,
        delay_ms,
        owner_dead,
        failed_attempt,
    )


def dead(
    ctx: Context,
    keys: CapabilityKeys,
    d: Delivery,
    reason: str,
    error: BaseException | None,
    only_if_owner_dead: bool = False,
) -> Decision:
    """Dead-letter the task with ``reason`` and the error, and store its ``dead`` result (if it keeps results)."""
    record = _dead_record(ctx, reason, error, d.attempt) if d.task.store_result else None
    letter = dead_letter(d.task.id, d.blob, d.version, d.attempt, d.reclaims, reason, error, ctx.consumer, d.entry_id)
    maxlen = ctx.settings.dead_letter_maxlen
    transition = Bury(keys, d.entry_id, ctx.consumer, d.task.id, record, ctx.ttl_ms, maxlen, letter, only_if_owner_dead)
    return Decision(transition, "dead", reason)


def undecodable(
    ctx: Context,
    keys: CapabilityKeys,
    entry_id: str,
    fields: codec.Fields,
    error: Exception,
    only_if_owner_dead: bool = False,
) -> Decision:
    """Dead-letter an entry that is not a valid task, keeping its raw fields (each value truncated so the
    whole stays valid msgpack under ``RAW_LIMIT``). When a task id can still be read, its ``dead`` result is
    stored too, so a producer waiting on it hears of the failure."""
    fields = codec.fields_dict(fields)
    items = [(k[:64], v) for k, v in list(fields.items())[:16]]
    # msgpack spends at most 5 bytes of header on each name and each value, and 3 on the map itself.
    overhead = 3 + sum(len(k) + 10 for k, _ in items)
    share = max(RAW_LIMIT - overhead, 0) // max(len(items), 1)
    raw = codec.pack({k: v[:share] for k, v in items})
    task_id = readable_task_id(fields.get(b"task"))
    # The letter holds no task to requeue: its version is the base one (the entry's own "v" is kept in "raw").
    letter = (
        *dead_letter(task_id, b"", codec.FORMAT_VERSION, 0, 0, "decode_error", error, ctx.consumer, entry_id),
        ("raw", raw),
    )
    record = _dead_record(ctx, "decode_error", error, 0) if task_id else None
    maxlen = ctx.settings.dead_letter_maxlen
    transition = Bury(
        keys, entry_id, ctx.consumer, task_id, record, ctx.ttl_ms, maxlen, letter, only_if_owner_dead, trusted_id=False
    )
    return Decision(transition, "dead", "decode_error")


def _dead_record(ctx: Context, reason: str, error: BaseException | None, attempt: int) -> bytes:
    error_type, message, trace = describe(error)
    outcome = Outcome(
        "dead",
        error_type=error_type,
        error_message=message,
        traceback=trace,
        reason=reason,
        attempt=attempt,
        worker=ctx.consumer,
        finished_at=time.time(),
    )
    return codec.encode_outcome(outcome)


def readable_task_id(blob: bytes | None) -> str:
    """The task id inside a task blob that failed to decode as a whole, or "" when there is none to trust."""
    if not blob or len(blob) > RAW_LIMIT * 256:
        return ""
    try:
        body = codec.unpack(blob, RAW_LIMIT * 256)
    except DecodeError:
        return ""
    task_id = body.get("id") if isinstance(body, dict) else None
    return task_id if isinstance(task_id, str) and codec.is_task_id(task_id) else ""


MESSAGE_LIMIT = 8192
"""Characters of an error's message and of its traceback kept in a result record or a dead letter."""


def describe(error: BaseException | None) -> tuple[str, str, str]:
    """(type name, message, traceback text) of ``error``, bounded; never raises, whatever ``error`` does."""
    if error is None:
        return "", "", ""
    try:
        trace = "".join(tb.format_exception(type(error), error, error.__traceback__))
    except Exception:
        trace = ""
    return type(error).__name__, message_of(error), trace[-MESSAGE_LIMIT:]


def message_of(error: BaseException) -> str:
    """``str(error)``, bounded; for an exception whose ``__str__`` raises, a line that says so."""
    try:
        message = str(error)
    except Exception:
        return f"<unprintable {type(error).__name__}>"
    if len(message) > MESSAGE_LIMIT:
        return message[:MESSAGE_LIMIT] + f"... ({len(message)} characters)"
    return message


def dead_letter(
    task_id: str,
    blob: bytes,
    version: bytes,
    attempt: int,
    reclaims: int,
    reason: str,
    error: BaseException | None,
    worker: str,
    entry_id: str,
) -> Letter:
    """The fields of a dead letter (see docs/wire-format.md); ``v`` is the format version of the task it holds."""
    error_type, message, trace = describe(error)
    return (
        ("v", version),
        ("task_id", task_id),
        ("task", blob),
        ("attempt", attempt),
        ("reclaims", reclaims),
        ("reason", reason),
        ("error", codec.pack({"type": error_type, "message": message, "traceback": trace})),
        ("worker", worker),
        ("entry_id", entry_id),
        ("failed_at_ms", int(time.time() * 1000)),
    )
