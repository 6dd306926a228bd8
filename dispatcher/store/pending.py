"""Operations on a capability group's consumers and pending entries: list them, page them, read entries by id,
forget a dead consumer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dispatcher.store import scripts, wire
from dispatcher.store.gateway import Op, check, is_error, text
from dispatcher.store.keys import GROUP, CapabilityKeys


@dataclass(frozen=True, slots=True)
class Consumer:
    """A consumer of a capability's group: its name and pending count."""

    name: str
    pending: int


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One pending entry: id, owner, milliseconds since its last delivery, Redis' delivery count."""

    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


def consumers(keys: CapabilityKeys) -> Op[list[Consumer]]:
    """The group's consumers; none when the stream or group does not exist."""
    reply = (yield [("XINFO CONSUMERS", keys.stream, GROUP)])[0]  # one name: redis-py then parses the reply
    if is_error(reply, "NOGROUP") or is_error(reply, "ERR no such key"):
        return []
    return [Consumer(text(c["name"]), int(c["pending"])) for c in check(reply)]


def pending_page(keys: CapabilityKeys, after: str, count: int, consumer: str | None = None) -> Op[list[PendingEntry]]:
    """Up to ``count`` pending entries with ids after ``after`` ("-" for the start), of one consumer or all."""
    start = "-" if after == "-" else "(" + after
    command: tuple[object, ...] = ("XPENDING", keys.stream, GROUP, start, "+", count)
    if consumer is not None:
        command = (*command, consumer)
    reply = (yield [(*command, {"parse_detail": True})])[0]
    if is_error(reply, "NOGROUP"):
        return []
    return [_entry(p) for p in check(reply)]


def idle(keys: CapabilityKeys, min_idle_ms: int, count: int) -> Op[list[PendingEntry]]:
    """Up to ``count`` pending entries (oldest first) delivered at least ``min_idle_ms`` ago."""
    command = ("XPENDING", keys.stream, GROUP, "IDLE", min_idle_ms, "-", "+", count, {"parse_detail": True})
    reply = (yield [command])[0]
    if is_error(reply, "NOGROUP") or is_error(reply, "ERR no such key") or is_error(reply, "no such key"):
        return []
    return [_entry(p) for p in check(reply)]


def _entry(p: dict[str, Any]) -> PendingEntry:
    return PendingEntry(
        text(p["message_id"]), text(p["consumer"]), int(p["time_since_delivered"]), int(p["times_delivered"])
    )


def own(streams: Sequence[str], consumer: str, limit: int) -> Op[list[list[str] | None]]:
    """Per stream, the ids of up to ``limit`` entries pending for ``consumer`` (None where the group is gone)."""
    if not streams:
        return []
    replies = yield [("XPENDING", s, GROUP, "-", "+", limit, consumer, {"parse_detail": True}) for s in streams]
    out: list[list[str] | None] = []
    for reply in replies:
        if is_error(reply, "NOGROUP"):
            out.append(None)
        else:
            out.append([text(p["message_id"]) for p in check(reply)])
    return out


def entries(keys: CapabilityKeys, entry_ids: Sequence[str]) -> Op[list[dict[bytes, bytes] | None]]:
    """The fields of each entry, or None where it was deleted from the stream."""
    replies = yield [("XRANGE", keys.stream, entry_id, entry_id, "COUNT", 1) for entry_id in entry_ids]
    out: list[dict[bytes, bytes] | None] = []
    for reply in replies:
        found = check(reply)
        out.append(found[0][1] if found else None)
    return out


def forget(keys: CapabilityKeys, consumer: str) -> Op[bool]:
    """Delete a dead consumer with nothing pending from the group; True when it was deleted."""
    call = scripts.call("forget", [keys.stream, keys.heartbeat(consumer)], [GROUP, consumer])
    reply = (yield [call])[0]
    if is_error(reply, "NOGROUP"):
        return False
    return wire.flag(check(reply), "forget")
