"""Operations on the work stream, the index and the delayed set of a capability: enqueue, read, promote, look up.

Recording what became of a task (settle, retry, bury) is ``dispatcher.store.transitions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dispatcher.errors import UnsupportedRedis
from dispatcher.settings import FLOW_WINDOW
from dispatcher.store import scripts, wire
from dispatcher.store.codec import FORMAT_VERSION, Fields
from dispatcher.store.gateway import Command, Op, check, is_error, text, wrap_error
from dispatcher.store.keys import GROUP, CapabilityKeys
from dispatcher.task import CAPABILITY_PATTERN

SUBMIT_CHUNK = 500
"""Tasks per submit script call: large enough to amortise the call, small enough not to stall Redis."""


@dataclass(frozen=True, slots=True)
class Enqueue:
    """One task to enqueue: its id, encoded blob and format version, its delay (ms from now by Redis' clock, which
    turns it into a due time; 0 = now), idempotency key, and whether it keeps a result (a kept result makes a
    re-submit of its id add nothing)."""

    task_id: str
    blob: bytes
    delay_ms: int = 0
    idempotency_key: str | None = None
    version: bytes = FORMAT_VERSION
    store_result: bool = True
    priority: int | None = None
    """A task with a priority waits in the ready set until the admitter (or submit's fast path) lets it in."""
    limited: bool = False
    """The task takes units from rate limits: it always waits for the admitter, in the limited set."""
    keyed: bool = False
    """The task has a concurrency key and no rate limit: it always waits for a permit, in the keyed set."""
    fairness_key: str | None = None
    """The task's tenant: it waits in its tenant's queue (ranked by its priority, 0 when it has none) for the fair
    gate, whatever else it has (its rate limits and concurrency key are checked there)."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """What one ``submit_batch`` round trip did: each item's ``Enqueued`` in input order, ``None`` for the items of a
    script call that failed, and the errors of those calls (redis-py's, one per failed call, in order).

    Each call is atomic for the errors ``refused_whole`` names (under maxmemory a script's first write is
    refused and nothing of that call is written; once it wrote, Redis lets it finish), so a batch can be written
    in part, call by call, and ``enqueued`` says exactly which part.
    """

    enqueued: list[wire.Enqueued | None]
    errors: list[Exception] = field(default_factory=list)

    def every(self) -> list[wire.Enqueued]:
        """Each item's ``Enqueued``; raises the first error (as ours) when a call failed."""
        if self.errors:
            raise wrap_error(self.errors[0], None) from self.errors[0]
        return [e for e in self.enqueued if e is not None]


def submit(
    batches: Sequence[tuple[CapabilityKeys, Sequence[Enqueue]]], idempotency_ttl_ms: int, window: int = FLOW_WINDOW
) -> Op[list[wire.Enqueued]]:
    """Enqueue tasks of one or more capabilities in one round trip; one ``Enqueued`` per item, in input order
    (an item not added names the task that already exists, by id or idempotency key). Raises the error of the
    first script call that failed: ``submit_batch`` says which items were written then."""
    return (yield from submit_batch(batches, idempotency_ttl_ms, window)).every()


def submit_batch(
    batches: Sequence[tuple[CapabilityKeys, Sequence[Enqueue]]], idempotency_ttl_ms: int, window: int = FLOW_WINDOW
) -> Op[Submitted]:
    """``submit``, saying what each script call did: one call per ``SUBMIT_CHUNK`` items of a capability, each
    written or failed on its own (``Submitted``). ``window`` is the admission window of tasks with a priority
    (``Settings.flow_window``): one goes straight onto the stream only while fewer entries than that wait there."""
    commands: list[Command] = []
    chunks: list[Sequence[Enqueue]] = []
    for keys, items in batches:
        for start in range(0, len(items), SUBMIT_CHUNK):
            chunks.append(items[start : start + SUBMIT_CHUNK])
            commands.append(_submit_call(keys, chunks[-1], idempotency_ttl_ms, window))
    replies = yield commands
    out: list[wire.Enqueued | None] = []
    errors: list[Exception] = []
    for chunk, reply in zip(chunks, replies, strict=True):
        if isinstance(reply, Exception):
            errors.append(reply)
            out.extend([None] * len(chunk))
            continue
        if not isinstance(reply, list) or len(reply) != len(chunk):
            raise wire.unexpected("submit", reply)
        out.extend(wire.enqueued(value, item.task_id) for item, value in zip(chunk, reply, strict=True))
    return Submitted(out, errors)


def _submit_call(keys: CapabilityKeys, items: Sequence[Enqueue], ttl_ms: int, window: int) -> Command:
    script_keys = [keys.stream, keys.index, keys.delayed, keys.ready, keys.limited, keys.tenants, keys.keyed]
    args: list[Any] = [ttl_ms, len(items), window]
    for item in items:
        result_slot = idem_slot = 0
        if item.store_result:
            script_keys.append(keys.result(item.task_id))
            result_slot = len(script_keys)
        if item.idempotency_key is not None:
            script_keys.append(keys.idempotency(item.idempotency_key))
            idem_slot = len(script_keys)
        priority: str | int = "" if item.priority is None else item.priority
        if item.limited:
            priority = f"w{item.priority or 0}"
        elif item.keyed:
            priority = f"k{item.priority or 0}"
        if item.fairness_key is not None:
            script_keys.append(keys.fair(item.fairness_key))
            priority = f"f{len(script_keys)}:{item.priority or 0}:{item.fairness_key}"
        args.extend((item.task_id, item.blob, item.version, item.delay_ms, result_slot, idem_slot, priority))
    return scripts.call("submit", script_keys, args)


def register_capabilities(capabilities_key: str, names: Sequence[str]) -> Op[None]:
    """Add capabilities to the fleet-wide set that stats and re-attach walk."""
    check((yield [("SADD", capabilities_key, *names)])[0])


def known_capabilities(capabilities_key: str) -> Op[list[str]]:
    """Every valid capability name in the fleet-wide set, sorted. A member that is not a valid name (written by
    something else) is left out, so no key is ever built from it."""
    members = check((yield [("SMEMBERS", capabilities_key)])[0])
    names = (m.decode(errors="replace") for m in members)
    return sorted(n for n in names if CAPABILITY_PATTERN.match(n))


@dataclass(frozen=True, slots=True)
class Lookup:
    """Where a task is: its result record (if settled) and its place (entry id or delayed record, if any)."""

    result: bytes | None
    place: str | wire.Delayed | None
    running: bool
    consumer: str | None = None
    """The consumer that holds a running task's entry."""


def lookup(keys: CapabilityKeys, task_id: str) -> Op[Lookup]:
    """Find a task: settled (result), delayed, queued or running (pending in the group)."""
    result, raw_place = yield [("GET", keys.result(task_id)), ("HGET", keys.index, task_id)]
    result, place = check(result), wire.place(check(raw_place))
    if result is not None or not isinstance(place, str):
        return Lookup(result, place, running=False)
    pending = (yield [("XPENDING", keys.stream, GROUP, place, place, 1, {"parse_detail": True})])[0]
    if is_error(pending, "NOGROUP"):
        return Lookup(None, place, running=False)
    held = check(pending)
    consumer = text(held[0]["consumer"]) if held else None
    return Lookup(None, place, running=bool(held), consumer=consumer)


@dataclass(frozen=True, slots=True)
class Placed:
    """What the place of an unsettled task adds to its ``Lookup``: its attempt and reclaims, and for a delayed
    task its due time (epoch ms, by Redis' clock)."""

    attempt: int | None = None
    reclaims: int | None = None
    due_ms: int | None = None


def describe(keys: CapabilityKeys, task_id: str) -> Op[tuple[Lookup, Placed]]:
    """``lookup``, and for a task not settled yet what its place says (its entry's fields, or its delayed record
    and due time): one more round trip than ``lookup``."""
    found = yield from lookup(keys, task_id)
    if found.result is not None or found.place is None:
        return found, Placed()
    if isinstance(found.place, wire.Delayed):
        due = check((yield [("ZSCORE", keys.delayed, task_id)])[0])
        return found, Placed(found.place.attempt, found.place.reclaims, None if due is None else int(float(due)))
    entries = check((yield [("XRANGE", keys.stream, found.place, found.place)])[0])
    if not entries:  # settled (and deleted) between the two round trips
        return found, Placed()
    fields = {text(k): v for k, v in dict(entries[0][1]).items()}
    return found, Placed(_int(fields.get("attempt")), _int(fields.get("reclaims")))


def _int(raw: Any) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:  # written by something that does not follow the wire format: unknown, not an error
        return None


def find_capability(index_keys: Sequence[CapabilityKeys], task_id: str) -> Op[CapabilityKeys | None]:
    """Which of these capabilities knows ``task_id`` (queued, delayed, running or settled)."""
    commands: list[Command] = []
    for keys in index_keys:
        commands += [("EXISTS", keys.result(task_id)), ("HEXISTS", keys.index, task_id)]
    replies = yield commands
    for i, keys in enumerate(index_keys):
        if check(replies[2 * i]) or check(replies[2 * i + 1]):
            return keys
    return None


def get_result(keys: CapabilityKeys, task_id: str) -> Op[bytes | None]:
    """The task's result record, or None while it has not settled (or after it expired)."""
    return check((yield [("GET", keys.result(task_id))])[0])  # type: ignore[no-any-return]


def ensure_groups(streams: Sequence[str]) -> Op[None]:
    """Create the consumer group of each stream at id 0 (MKSTREAM); BUSYGROUP is the only error tolerated."""
    replies = yield [("XGROUP", "CREATE", s, GROUP, "0", "MKSTREAM") for s in streams]
    for reply in replies:
        if not is_error(reply, "BUSYGROUP"):
            check(reply)


def read(
    streams: Sequence[str], consumer: str, count: int, block_ms: int | None, after: Sequence[str] | None = None
) -> Op[list[tuple[str, list[tuple[str, Fields | None]]]]]:
    """XREADGROUP up to ``count`` entries per stream: new ones (``>``), or, with ``after`` (one id per stream),
    the consumer's own pending entries after those ids (a deleted entry comes back with fields ``None``). Fields
    are a dict, or a flat list when the client hands the reply over raw (``make_read_client``).

    A missing group (NOGROUP: the stream or group was deleted, e.g. Redis came back empty) is recreated at
    id 0 and the read returns nothing this time.
    """
    reply = (yield [read_command(streams, consumer, count, block_ms, after)])[0]
    if is_error(reply, "NOGROUP") or is_error(reply, "UNBLOCKED"):
        yield from ensure_groups(streams)
        return []
    return read_reply(reply)


def read_command(
    streams: Sequence[str], consumer: str, count: int, block_ms: int | None, after: Sequence[str] | None = None
) -> Command:
    """The XREADGROUP of ``read``."""
    command: list[Any] = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count]
    if block_ms is not None and after is None:
        command += ["BLOCK", block_ms]
    command += ["STREAMS", *streams, *(after if after is not None else [">"] * len(streams))]
    return tuple(command)


def read_reply(reply: Any) -> list[tuple[str, list[tuple[str, Fields | None]]]]:
    """An XREADGROUP reply (not an error) as (stream, [(entry id, fields)])."""
    reply = check(reply)
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3 shape
        reply = list(reply.items())
    return [(text(stream), [(text(entry_id), fields) for entry_id, fields in entries]) for stream, entries in reply]


def promote(keys: CapabilityKeys | Sequence[CapabilityKeys], limit: int, window: int = FLOW_WINDOW) -> Op[int]:
    """Move up to ``limit`` delayed tasks of each capability that are due by Redis' clock onto its stream (a
    flow-controlled one into its waiting set: ``promote.lua``; ``window`` is the admission window of a task with a
    priority alone), all capabilities in one round trip; returns how many moved."""
    every = [keys] if isinstance(keys, CapabilityKeys) else list(keys)
    if not every:
        return 0
    replies = yield [
        scripts.call("promote", [k.stream, k.index, k.delayed, *k.waiting_sets], [limit, window]) for k in every
    ]
    return sum(wire.count(check(r), "promote") for r in replies)


def server_check() -> Op[tuple[str, str]]:
    """Redis version and maxmemory-policy; raises ``UnsupportedRedis`` below 7.0."""
    info, policy = yield [("INFO", "server"), ("CONFIG", "GET", "maxmemory-policy")]
    version = str(check(info).get("redis_version", "0"))
    major = int(version.split(".", maxsplit=1)[0] or 0)
    if major < 7:
        raise UnsupportedRedis(f"Redis {version} is not supported: agent-dispatcher needs Redis >= 7.0")
    if isinstance(policy, Exception):  # CONFIG may be denied to an ACL user: the policy is then unknown
        return version, "unknown"
    values = check(policy)
    if isinstance(values, dict):
        raw = values.get(b"maxmemory-policy", values.get("maxmemory-policy", b"unknown"))
    else:
        raw = values[1] if len(values) > 1 else b"unknown"
    return version, raw.decode() if isinstance(raw, bytes) else str(raw)
