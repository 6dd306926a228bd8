"""Operations that read the fleet's state for stats: every capability's counters and the worker registry.

The whole fleet is read in three round trips at most, however many capabilities and workers there are: the first
asks for the capability set, the registry, the server clock and its INFO; the second, pipelined, asks for every
counter of every capability (group, lengths, consumers, oldest pending entry, paused flag, throughput ring) and
every heartbeat key the registry names; a third, small one finds the age of the oldest waiting task (one
``XRANGE ... COUNT 1`` per capability with undelivered work) and the heartbeats of group consumers that the
registry does not list. It is skipped when there is nothing to ask. Never KEYS or SCAN.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dispatcher.errors import DecodeError
from dispatcher.store import codec, fair, throughput
from dispatcher.store.gateway import EACH_PRIMARY, Command, Op, check, is_error
from dispatcher.store.keys import GROUP, KeySpace

logger = logging.getLogger(__name__)

NO_THROUGHPUT = throughput.Throughput(0, 0, 0.0)
PER_CAPABILITY = 13
"""Commands per capability in the second round trip."""


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
    stale_consumers: tuple[str, ...] = ()
    """Consumers of the group whose heartbeat key for this capability does not exist."""
    oldest_running_idle_ms: int | None = None
    """Milliseconds since the oldest pending entry was delivered (XPENDING's idle), None when none runs."""
    paused: bool = False
    throughput: throughput.Throughput = NO_THROUGHPUT
    ready: int = 0
    """Tasks with a priority waiting for admission in the ready set (not on the stream yet)."""
    limited: int = 0
    """Tasks waiting for rate limits in the limited set."""
    keyed: int = 0
    """Tasks with a concurrency key waiting for a permit in the keyed set."""
    indexed: int = 0
    """HLEN of the index: every task queued, running, delayed or waiting (fair queues included)."""
    fair_held_limit: int = 0
    """Tenants' tasks the fair gate last found held back by a rate limit (its snapshot; 0 when none)."""
    fair_held_key: int = 0
    """Tenants' tasks the fair gate last found held back by their key's cap."""


@dataclass(frozen=True, slots=True)
class RedisInfo:
    """What stats shows of the server."""

    version: str
    used_memory: int
    """Bytes."""
    maxmemory: int
    """Bytes; 0 means no limit."""
    maxmemory_policy: str


@dataclass(frozen=True, slots=True)
class FleetReading:
    """Everything one stats read returns."""

    server_time_ms: int
    capabilities: tuple[CapabilityReading, ...]
    workers: tuple[codec.WorkerRecord, ...]
    alive: Mapping[str, bool]
    """Per registry consumer: whether any of its heartbeat keys exists."""
    redis: RedisInfo | None = None
    """The server's; on a Redis Cluster, the primary nearest its ``maxmemory`` (or using the most memory when
    none has a limit): the one that fills first."""
    known: tuple[str, ...] = ()
    """Every capability of the capability set (the readings may cover fewer, when asked for some only)."""
    redis_nodes: tuple[tuple[str, RedisInfo], ...] = ()
    """On a Redis Cluster, every primary's (``host:port``, info), sorted by node; empty on one server."""


def read_fleet(keyspace: KeySpace, only: Sequence[str] | None = None) -> Op[FleetReading]:
    """Read every capability's counters (or those in ``only`` that exist), the registry and the heartbeats.

    Consumer liveness comes from the registry's heartbeat keys: one HGETALL for the whole fleet in the first
    round trip, so every heartbeat EXISTS fits in the second. ``XINFO CONSUMERS`` (in the second too) lists the
    group's consumers, dead ones included until the reaper deletes them: those without a heartbeat are stale.
    """
    members, raw_registry, clock, info = yield [
        ("SMEMBERS", keyspace.capabilities),
        ("HGETALL", keyspace.workers),
        ("TIME",),
        ("INFO", "server", "memory", EACH_PRIMARY),
    ]
    known = tuple(sorted(m.decode() if isinstance(m, bytes) else str(m) for m in check(members)))
    names = [n for n in known if only is None or n in only]
    workers = _decode_registry(check(raw_registry))
    if only is not None:
        workers = [w for w in workers if set(w.capabilities) & set(names)]
    now_ms = _time_ms(check(clock))

    commands: list[Command] = []
    for name in names:
        commands += _capability_commands(keyspace, name)
    # One EXISTS per (worker, capability) pair: per-key replies, and each key stays in its own cluster slot.
    probes = [(w.consumer, cap) for w in workers for cap in w.capabilities]
    commands += [("EXISTS", keyspace.capability(cap).heartbeat(consumer)) for consumer, cap in probes]
    replies: list[Any] = (yield commands) if commands else []

    beats = {probe: bool(check(r)) for probe, r in zip(probes, replies[PER_CAPABILITY * len(names) :], strict=True)}
    alive = {w.consumer: False for w in workers}
    for (consumer, _), beating in beats.items():
        alive[consumer] = alive[consumer] or beating
    readings = [
        _reading(name, replies[PER_CAPABILITY * i : PER_CAPABILITY * (i + 1)], beats, now_ms / 1000)
        for i, name in enumerate(names)
    ]
    readings = yield from _third_trip(keyspace, readings, beats)
    nodes = _node_infos(check(info))
    fullest = max((i for _, i in nodes), key=_fullness) if nodes else _redis_info(check(info))
    return FleetReading(now_ms, tuple(readings), tuple(workers), alive, fullest, known, nodes)


def _capability_commands(keyspace: KeySpace, name: str) -> list[Command]:
    keys = keyspace.capability(name)
    return [
        ("XINFO", "GROUPS", keys.stream),
        ("XLEN", keys.stream),
        ("ZCARD", keys.delayed),
        ("XLEN", keys.dead),
        ("XINFO CONSUMERS", keys.stream, GROUP),  # one name: redis-py then parses the reply
        ("XPENDING", keys.stream, GROUP, "-", "+", 1, {"parse_detail": True}),
        ("EXISTS", keys.paused),
        ("HGETALL", keys.throughput),
        ("ZCARD", keys.ready),
        ("ZCARD", keys.limited),
        ("HLEN", keys.index),
        ("ZCARD", keys.keyed),
        fair.held_command(keys),
    ]


def _reading(name: str, replies: list[Any], beats: Mapping[tuple[str, str], bool], now_s: float) -> CapabilityReading:
    groups, length, delayed, dead, consumers, oldest, paused, ring, ready, limited, indexed, keyed, held = replies
    held_limit, held_key = fair.held_counts(held)
    live = sorted(c for (c, cap), beating in beats.items() if cap == name and beating)
    in_group = _names(consumers)
    # A group consumer the registry does not list is judged in the third round trip (its own EXISTS).
    stale = tuple(c for c in in_group if (c, name) in beats and not beats[(c, name)])
    unknown = tuple(c for c in in_group if (c, name) not in beats)
    pending = _entries(oldest)
    return CapabilityReading(
        name=name,
        length=int(check(length)),
        group=_group(groups),
        delayed=int(check(delayed)),
        dead=int(check(dead)),
        live_consumers=tuple(live),
        oldest_waiting_ms=None,
        stale_consumers=stale + unknown,  # provisional: the third round trip keeps only those without a heartbeat
        oldest_running_idle_ms=int(pending[0]["time_since_delivered"]) if pending else None,
        paused=bool(check(paused)),
        throughput=throughput.window(check(ring), now_s),
        ready=int(check(ready)),
        limited=int(check(limited)),
        indexed=int(check(indexed)),
        keyed=int(check(keyed)),
        fair_held_limit=held_limit,
        fair_held_key=held_key,
    )


def _names(reply: Any) -> list[str]:
    if _missing(reply):
        return []
    return sorted(_text(c["name"]) for c in check(reply))


def _entries(reply: Any) -> list[dict[str, Any]]:
    return [] if _missing(reply) else list(check(reply))


def _missing(reply: Any) -> bool:
    # "no such key": the stream does not exist yet (nothing submitted, or Redis came back empty).
    # redis-py strips the "ERR " of the reply, so the message starts with "no such key".
    return is_error(reply, "no such key") or is_error(reply, "ERR no such key") or is_error(reply, "NOGROUP")


def _third_trip(
    keyspace: KeySpace, readings: list[CapabilityReading], beats: Mapping[tuple[str, str], bool]
) -> Op[list[CapabilityReading]]:
    """The oldest waiting entry of each capability with undelivered work, and the heartbeats of group consumers
    the registry does not list, in one round trip (none when there is nothing to ask)."""
    # The first entry after the group's last-delivered-id is the oldest one not yet delivered (every entry is
    # added with an auto id, so its id is its enqueue time). Without a group, every entry is waiting.
    wanted = [r for r in readings if r.length > (r.group.pending if r.group else 0)]
    unknown = [(r.name, c) for r in readings for c in r.stale_consumers if (c, r.name) not in beats]
    commands: list[Command] = []
    for r in wanted:
        start = f"({r.group.last_delivered_id}" if r.group else "-"
        commands.append(("XRANGE", keyspace.capability(r.name).stream, start, "+", "COUNT", 1))
    commands += [("EXISTS", keyspace.capability(cap).heartbeat(c)) for cap, c in unknown]
    if not commands:
        return readings
    replies = yield commands
    oldest = {}
    for r, reply in zip(wanted, replies, strict=False):
        entries = check(reply)
        if entries:
            oldest[r.name] = int(_text(entries[0][0]).split("-", 1)[0])
    beating = {probe for probe, reply in zip(unknown, replies[len(wanted) :], strict=True) if check(reply)}
    return [
        replace(
            r,
            oldest_waiting_ms=oldest.get(r.name),
            stale_consumers=tuple(c for c in r.stale_consumers if (r.name, c) not in beating),
        )
        for r in readings
    ]


def _node_infos(reply: Any) -> tuple[tuple[str, RedisInfo], ...]:
    """Every primary's info from an ``EACH_PRIMARY`` INFO on a cluster (a map of node to INFO), or () for the
    INFO of one server."""
    if not isinstance(reply, Mapping) or "redis_version" in reply:
        return ()
    return tuple(sorted((str(node), _redis_info(info)) for node, info in reply.items() if isinstance(info, Mapping)))


def _fullness(info: RedisInfo) -> tuple[float, int]:
    return (info.used_memory / info.maxmemory if info.maxmemory else 0.0), info.used_memory


def _redis_info(info: Mapping[str, Any]) -> RedisInfo:
    return RedisInfo(
        version=str(info.get("redis_version", "")),
        used_memory=int(info.get("used_memory", 0)),
        maxmemory=int(info.get("maxmemory", 0)),
        maxmemory_policy=str(info.get("maxmemory_policy", "")),
    )


def _group(reply: Any) -> GroupInfo | None:
    if _missing(reply):
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
