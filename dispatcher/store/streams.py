"""Operations on one capability's task lifecycle: enqueue, read, settle, retry, bury, promote, look up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dispatcher.errors import UnsupportedRedis
from dispatcher.store import scripts
from dispatcher.store.codec import FORMAT_VERSION
from dispatcher.store.gateway import Command, Op, check, is_error, text
from dispatcher.store.keys import GROUP, CapabilityKeys

SUBMIT_CHUNK = 500
"""Tasks per submit script call: large enough to amortise the call, small enough not to stall Redis."""


@dataclass(frozen=True, slots=True)
class Enqueue:
    """One task to enqueue: its id, encoded blob, due time (epoch ms, 0 = now) and idempotency key."""

    task_id: str
    blob: bytes
    due_ms: int
    idempotency_key: str | None


def submit(batches: Sequence[tuple[CapabilityKeys, Sequence[Enqueue]]], idempotency_ttl_ms: int) -> Op[list[str]]:
    """Enqueue tasks of one or more capabilities in one round trip; replies follow the input order.

    Each reply is an entry id, ``"d"`` (delayed), or ``"=<task id>"`` when an earlier task with that id or
    idempotency key was found and nothing was added.
    """
    commands: list[Command] = []
    for keys, items in batches:
        for start in range(0, len(items), SUBMIT_CHUNK):
            commands.append(_submit_call(keys, items[start : start + SUBMIT_CHUNK], idempotency_ttl_ms))
    replies = yield commands
    out: list[str] = []
    for reply in replies:
        out.extend(r.decode() if isinstance(r, bytes) else str(r) for r in check(reply))
    return out


def _submit_call(keys: CapabilityKeys, items: Sequence[Enqueue], ttl_ms: int) -> Command:
    script_keys = [keys.stream, keys.index, keys.delayed, *(keys.result(item.task_id) for item in items)]
    args: list[Any] = [ttl_ms, FORMAT_VERSION, len(items)]
    for item in items:
        slot = 0
        if item.idempotency_key is not None:
            script_keys.append(keys.idempotency(item.idempotency_key))
            slot = len(script_keys)
        args.extend((item.task_id, item.blob, item.due_ms, slot))
    return scripts.call("submit", script_keys, args)


def register_capabilities(capabilities_key: str, names: Sequence[str]) -> Op[None]:
    """Add capabilities to the fleet-wide set that stats and re-attach walk."""
    check((yield [("SADD", capabilities_key, *names)])[0])


def known_capabilities(capabilities_key: str) -> Op[list[str]]:
    """Every capability in the fleet-wide set, sorted."""
    members = check((yield [("SMEMBERS", capabilities_key)])[0])
    return sorted(m.decode() for m in members)


@dataclass(frozen=True, slots=True)
class Lookup:
    """Where a task is: its result record (if settled) and its index value (entry id or delayed record)."""

    result: bytes | None
    place: bytes | None
    running: bool


def lookup(keys: CapabilityKeys, task_id: str) -> Op[Lookup]:
    """Find a task: settled (result), delayed, queued or running (pending in the group)."""
    result, place = yield [("GET", keys.result(task_id)), ("HGET", keys.index, task_id)]
    result, place = check(result), check(place)
    if result is not None or place is None or place.startswith(b"d"):
        return Lookup(result, place, running=False)
    pending = (yield [("XPENDING", keys.stream, GROUP, place, place, 1, {"parse_detail": True})])[0]
    if is_error(pending, "NOGROUP"):
        return Lookup(None, place, running=False)
    return Lookup(None, place, running=bool(check(pending)))


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
) -> Op[list[tuple[str, list[tuple[str, dict[bytes, bytes] | None]]]]]:
    """XREADGROUP up to ``count`` entries per stream: new ones (``>``), or, with ``after`` (one id per stream),
    the consumer's own pending entries after those ids (a deleted entry comes back with fields ``None``).

    A missing group (NOGROUP: the stream or group was deleted, e.g. Redis came back empty) is recreated at
    id 0 and the read returns nothing this time.
    """
    command: list[Any] = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count]
    if block_ms is not None and after is None:
        command += ["BLOCK", block_ms]
    command += ["STREAMS", *streams, *(after if after is not None else [">"] * len(streams))]
    reply = (yield [tuple(command)])[0]
    if is_error(reply, "NOGROUP") or is_error(reply, "UNBLOCKED"):
        yield from ensure_groups(streams)
        return []
    reply = check(reply)
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3 shape
        reply = list(reply.items())
    return [(text(stream), [(text(entry_id), fields) for entry_id, fields in entries]) for stream, entries in reply]


def ack(stream: str, entry_ids: Sequence[str]) -> Command:
    """XACK for entries that no longer exist in the stream (their PEL entries would never settle)."""
    return ("XACK", stream, GROUP, *entry_ids)


def settle_call(
    keys: CapabilityKeys, entry_id: str, consumer: str, task_id: str, record: bytes, ttl_ms: int, status: str
) -> Command:
    """The settle script call: store the final result (succeeded or failed) if ``consumer`` still owns it."""
    return scripts.call(
        "settle",
        [keys.stream, keys.index, keys.result(task_id)],
        [GROUP, entry_id, consumer, task_id, record, ttl_ms, keys.channel(task_id), status],
    )


def retry_call(
    keys: CapabilityKeys,
    entry_id: str,
    owner: str,
    task_id: str,
    blob: bytes,
    attempt: int,
    reclaims: int,
    due_ms: int,
    only_if_owner_dead: bool = False,
) -> Command:
    """The retry script call: re-add the task (now or at ``due_ms``) as a fresh entry, ack+delete the old."""
    script_keys = [keys.stream, keys.index, keys.delayed]
    if only_if_owner_dead:
        script_keys.append(keys.heartbeat(owner))
    return scripts.call(
        "retry",
        script_keys,
        [GROUP, entry_id, owner, task_id, blob, attempt, reclaims, due_ms, FORMAT_VERSION],
    )


def bury_call(
    keys: CapabilityKeys,
    entry_id: str,
    owner: str,
    task_id: str,
    record: bytes,
    ttl_ms: int,
    maxlen: int,
    letter: Sequence[tuple[str, bytes | str | int]],
    only_if_owner_dead: bool = False,
) -> Command:
    """The bury script call: dead-letter the task (``letter`` fields), store its ``dead`` result, ack+delete."""
    script_keys = [keys.stream, keys.index, keys.dead, keys.result(task_id or "-")]
    if only_if_owner_dead:
        script_keys.append(keys.heartbeat(owner))
    args: list[Any] = [GROUP, entry_id, owner, task_id, record, ttl_ms, keys.channel(task_id), maxlen]
    for field, value in letter:
        args += [field, value]
    return scripts.call("bury", script_keys, args)


def transitions(commands: Sequence[Command]) -> Op[list[scripts.Settle | Exception]]:
    """Run settle/retry/bury calls in one round trip. A failed call comes back as our exception, not raised.

    Settle calls of one stream, consumer and TTL are merged into ``settle_many`` calls (up to
    ``SETTLE_CHUNK`` tasks each): one script call instead of one per task, on the worker's hottest path.
    """
    merged, spans = _merge_settles(commands)
    replies = yield merged
    out: list[scripts.Settle | Exception] = []
    for call, position in spans:
        reply = replies[call]
        try:
            value = check(reply)
            out.append(scripts.settle_outcome(value if position is None else value[position]))
        except Exception as e:  # handed back per call so one failure does not hide the others
            out.append(e)
    return out


SETTLE_CHUNK = 200


def _merge_settles(commands: Sequence[Command]) -> tuple[list[Command], list[tuple[int, int | None]]]:
    """Group settle calls; ``spans[i]`` is (index of the merged call, position in its reply or None)."""
    settle_sha = scripts.script("settle").sha
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, command in enumerate(commands):
        if command[1] == settle_sha:
            # settle: EVALSHA sha 3 stream index result | group entry consumer task record ttl channel status
            groups.setdefault((command[3], command[4], command[6], command[8], command[11]), []).append(i)
    merged: list[Command] = []
    spans: list[tuple[int, int | None]] = [(0, None)] * len(commands)
    for i, command in enumerate(commands):
        if command[1] != settle_sha:
            spans[i] = (len(merged), None)
            merged.append(command)
    for (stream, index, group, consumer, ttl), members in groups.items():
        for start in range(0, len(members), SETTLE_CHUNK):
            chunk = members[start : start + SETTLE_CHUNK]
            keys: list[Any] = [stream, index]
            args: list[Any] = [group, consumer, ttl]
            for position, i in enumerate(chunk):
                c = commands[i]
                keys.append(c[5])
                args += [c[7], c[9], c[10], c[12], c[13]]
                spans[i] = (len(merged), position)
            merged.append(scripts.call("settle_many", keys, args))
    return merged, spans


def promote(keys: CapabilityKeys | Sequence[CapabilityKeys], now_ms: int, limit: int) -> Op[int]:
    """Move up to ``limit`` due delayed tasks of each capability onto its stream, all capabilities in one
    round trip; returns how many moved."""
    every = [keys] if isinstance(keys, CapabilityKeys) else list(keys)
    if not every:
        return 0
    replies = yield [
        scripts.call("promote", [k.stream, k.index, k.delayed], [now_ms, limit, FORMAT_VERSION]) for k in every
    ]
    return sum(int(check(r)) for r in replies)


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
