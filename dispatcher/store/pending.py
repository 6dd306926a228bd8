"""Operations the reaper needs: consumers of a group, pending pages, entries by id, leases, forgetting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dispatcher.store import scripts
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


def lease(key: str, owner: str, ttl_ms: int) -> Op[bool]:
    """Take or renew a lease (``ttl_ms`` 0: release it); True when ``owner`` holds (or released) it."""
    reply = (yield [scripts.call("lease", [key], [owner, ttl_ms])])[0]
    if is_error(reply, "OOM"):
        return False
    return bool(check(reply))


def uptime_s() -> Op[int]:
    """Seconds since the Redis server started (a restart may have lost every heartbeat)."""
    info = check((yield [("INFO", "server")])[0])
    return int(info.get("uptime_in_seconds", 0))


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
    return [
        PendingEntry(
            text(p["message_id"]), text(p["consumer"]), int(p["time_since_delivered"]), int(p["times_delivered"])
        )
        for p in check(reply)
    ]


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
    return bool(check(reply))


def prune_registry(registry_key: str, consumers_: Sequence[str]) -> Op[None]:
    """Remove stale worker records."""
    if consumers_:
        check((yield [("HDEL", registry_key, *consumers_)])[0])
