"""Operations that read the fleet's state for stats: every capability's counters and the worker registry.

The whole fleet is read in two round trips, however many capabilities and workers there are: the first asks
for the capability set, the registry and the server clock; the second, pipelined, asks for every counter of
every capability and every heartbeat key the registry names. A third, small one (one ``XRANGE ... COUNT 1``
per capability with undelivered work) finds the age of the oldest waiting task; it is skipped when nothing
waits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.errors import DecodeError
from dispatcher.store import codec
from dispatcher.store.gateway import Command, Op, check, is_error
from dispatcher.store.keys import GROUP, KeySpace

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """The ``workers`` group of a capability's stream, as ``XINFO GROUPS`` reports it."""

    pending: int
    lag: int | None
    """Entries not yet delivered to the group; None when Redis cannot tell (a tombstone past the group)."""
    last_delivered_id: str


@dataclass(frozen=True, slots=True)
class CapabilityReading:
    """The raw counters of one capability."""

    name: str
    length: int
    """XLEN of the work stream: entries waiting plus entries delivered and not yet settled."""
    group: GroupInfo | None
    """None when the stream or its group does not exist."""
    delayed: int
    dead: int
    live_consumers: tuple[str, ...]
    """Registry consumers serving this capability whose heartbeat key for it exists."""
    oldest_waiting_ms: int | None
    """Epoch ms of the oldest entry not yet delivered (from its entry id), None when none waits."""


@dataclass(frozen=True, slots=True)
class FleetReading:
    """Everything one stats read returns."""

    server_time_ms: int
    capabilities: tuple[CapabilityReading, ...]
    workers: tuple[codec.WorkerRecord, ...]
    alive: Mapping[str, bool]
    """Per registry consumer: whether any of its heartbeat keys exists."""


def read_fleet(keyspace: KeySpace) -> Op[FleetReading]:
    """Read every capability's counters, the worker registry and the heartbeats, in two round trips.

    Consumer names come from the registry hash, not from ``XINFO CONSUMERS``: the registry is one HGETALL
    for the whole fleet in the first round trip, so every heartbeat EXISTS fits in the second. ``XINFO
    CONSUMERS`` would cost one more command per capability and a third round trip before the EXISTS, and it
    lists every consumer the group ever had (dead ones stay until the reaper deletes them).
    """
    members, raw_registry, clock = yield [("SMEMBERS", keyspace.capabilities), ("HGETALL", keyspace.workers), ("TIME",)]
    names = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in check(members))
    workers = _decode_registry(check(raw_registry))
    now_ms = _time_ms(check(clock))

    commands: list[Command] = []
    for name in names:
        keys = keyspace.capability(name)
        commands += [
            ("XINFO", "GROUPS", keys.stream),
            ("XLEN", keys.stream),
            ("ZCARD", keys.delayed),
            ("XLEN", keys.dead),
        ]
    # One EXISTS per (worker, capability) pair: per-key replies, and each key stays in its own cluster slot.
    probes = [(w.consumer, cap) for w in workers for cap in w.capabilities]
    commands += [("EXISTS", keyspace.capability(cap).heartbeat(consumer)) for consumer, cap in probes]
    replies: list[Any] = (yield commands) if commands else []

    beats = [bool(check(r)) for r in replies[4 * len(names) :]]
    live: dict[str, list[str]] = {}
    alive = {w.consumer: False for w in workers}
    for (consumer, cap), beating in zip(probes, beats, strict=True):
        if beating:
            live.setdefault(cap, []).append(consumer)
            alive[consumer] = True

    readings = []
    for i, name in enumerate(names):
        groups, length, delayed, dead = replies[4 * i : 4 * i + 4]
        readings.append(
            CapabilityReading(
                name=name,
                length=int(check(length)),
                group=_group(groups),
                delayed=int(check(delayed)),
                dead=int(check(dead)),
                live_consumers=tuple(sorted(live.get(name, ()))),
                oldest_waiting_ms=None,
            )
        )
    readings = yield from _oldest_waiting(keyspace, readings)
    return FleetReading(now_ms, tuple(readings), tuple(workers), alive)


def _oldest_waiting(keyspace: KeySpace, readings: list[CapabilityReading]) -> Op[list[CapabilityReading]]:
    # The first entry after the group's last-delivered-id is the oldest one not yet delivered (every entry is
    # added with an auto id, so its id is its enqueue time). Without a group, every entry is waiting.
    wanted = [r for r in readings if r.length > (r.group.pending if r.group else 0)]
    if not wanted:
        return readings
    commands: list[Command] = []
    for r in wanted:
        start = f"({r.group.last_delivered_id}" if r.group else "-"
        commands.append(("XRANGE", keyspace.capability(r.name).stream, start, "+", "COUNT", 1))
    replies = yield commands
    oldest = {}
    for r, reply in zip(wanted, replies, strict=True):
        entries = check(reply)
        if entries:
            entry_id = entries[0][0]
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            oldest[r.name] = int(entry_id.split("-", 1)[0])
    return [_with_oldest(r, oldest.get(r.name)) for r in readings]


def _with_oldest(r: CapabilityReading, oldest_ms: int | None) -> CapabilityReading:
    if oldest_ms is None:
        return r
    return CapabilityReading(r.name, r.length, r.group, r.delayed, r.dead, r.live_consumers, oldest_ms)


def _group(reply: Any) -> GroupInfo | None:
    # "no such key": the stream does not exist yet (nothing submitted, or Redis came back empty).
    # redis-py strips the "ERR " of the reply, so the message starts with "no such key".
    if is_error(reply, "no such key") or is_error(reply, "ERR no such key") or is_error(reply, "NOGROUP"):
        return None
    for group in check(reply):
        info = _as_dict(group)
        if _text(info.get("name")) == GROUP:
            lag = info.get("lag")
            return GroupInfo(
                pending=int(info.get("pending") or 0),
                lag=None if lag is None else int(lag),
                last_delivered_id=_text(info.get("last-delivered-id")) or "0-0",
            )
    return None


def _as_dict(group: Any) -> dict[str, Any]:
    # redis-py parses XINFO GROUPS into dicts with bytes keys; a raw reply (or RESP3) may be a flat list.
    items = group.items() if isinstance(group, Mapping) else zip(group[::2], group[1::2], strict=True)
    return {_text(k): v for k, v in items}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value) if value is not None else ""


def _time_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _decode_registry(raw: Mapping[bytes, bytes]) -> list[codec.WorkerRecord]:
    records = []
    for consumer, blob in raw.items():
        try:
            records.append(codec.decode_worker(blob))
        except DecodeError as e:
            # A record we cannot read is left out of stats (the reaper prunes records whose heartbeats are
            # gone); debug only, since stats --watch reads the registry several times a second.
            logger.debug("unreadable worker record consumer=%s error=%s", _text(consumer), e)
    return sorted(records, key=lambda w: w.consumer)
