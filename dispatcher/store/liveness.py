"""Operations on the fleet's liveness: worker heartbeats, the worker registry, leases and the server's uptime.

A worker is alive for a capability while its heartbeat key ``{p}:{cap}:hb:<consumer>`` exists. The registry
hash ``{p}:workers`` maps each consumer to a msgpack record (see ``WorkerRecord``) for listing workers
without KEYS/SCAN; a record whose heartbeats are gone is stale and is pruned by the reaper.
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.store import scripts, wire
from dispatcher.store.gateway import Command, Op, check, is_error


def heartbeat(
    heartbeat_keys: Sequence[str],
    token: str,
    registry: str,
    consumer: str,
    record: bytes,
    ttl_ms: int,
    capabilities_key: str | None = None,
    capabilities: Sequence[str] = (),
    paused_keys: Sequence[str] = (),
) -> Op[tuple[list[bool], float, list[bool]]]:
    """Claim or renew a worker's heartbeat keys under its ``token``, refresh its registry record (and re-add its
    capabilities to the set); per key, whether this worker holds it (False: another live worker holds that name),
    Redis' clock (epoch seconds), by which the worker decides expiry, and per paused-flag key whether it exists
    (the same round trip: a pause reaches every worker within one heartbeat interval).

    A heartbeat key is a lease (``lease.lua``): renewed with PEXPIRE when the token holds it, taken with SET NX
    when it is free. Under maxmemory with noeviction PEXPIRE still works while SET does not, so a full Redis never
    makes live workers look dead; a claim refused for memory counts as held (nothing says another worker holds it).
    A registry write refused for memory is tolerated for the same reason. The capabilities go back into the
    fleet-wide set on every beat: after Redis came back empty the set is gone, and the mover and the reaper, which
    walk that set, would never visit these capabilities again.
    """
    commands: list[Command] = [scripts.call("lease", [key], [token, ttl_ms]) for key in heartbeat_keys]
    commands.append(("HSET", registry, consumer, record))
    if capabilities_key is not None and capabilities:
        commands.append(("SADD", capabilities_key, *capabilities))
    commands.append(("TIME",))
    commands += [("EXISTS", key) for key in paused_keys]
    replies = yield commands
    flags = [bool(check(r)) for r in replies[len(replies) - len(paused_keys) :]]
    replies = replies[: len(replies) - len(paused_keys)]
    held = [True if is_error(r, "OOM") else wire.flag(check(r), "lease") for r in replies[: len(heartbeat_keys)]]
    for reply in replies[len(heartbeat_keys) : -1]:
        if not is_error(reply, "OOM"):
            check(reply)
    seconds, micros = check(replies[-1])
    return held, int(seconds) + int(micros) / 1e6, flags


def unregister(heartbeat_keys: Sequence[str], token: str, registry: str, consumer: str) -> Op[None]:
    """Delete a worker's heartbeats (only those its token holds) and, if it held them all, its registry record."""
    replies = yield [scripts.call("lease", [key], [token, 0]) for key in heartbeat_keys]
    if all(wire.flag(check(r), "lease") for r in replies):
        check((yield [("HDEL", registry, consumer)])[0])


def alive(heartbeat_keys: Sequence[str]) -> Op[list[bool]]:
    """Whether each heartbeat key exists."""
    if not heartbeat_keys:
        return []
    replies = yield [("EXISTS", key) for key in heartbeat_keys]
    return [bool(check(r)) for r in replies]


def registry(registry_key: str) -> Op[dict[str, bytes]]:
    """Every registry record by consumer name."""
    raw = check((yield [("HGETALL", registry_key)])[0])
    return {k.decode(): v for k, v in raw.items()}


def lease(key: str, owner: str, ttl_ms: int) -> Op[bool]:
    """Take or renew a lease (``ttl_ms`` 0: release it); True when ``owner`` holds (or released) it."""
    reply = (yield [scripts.call("lease", [key], [owner, ttl_ms])])[0]
    if is_error(reply, "OOM"):
        return False
    return wire.flag(check(reply), "lease")


def uptime_s() -> Op[int]:
    """Seconds since the Redis server started (a restart may have lost every heartbeat)."""
    info = check((yield [("INFO", "server")])[0])
    return int(info.get("uptime_in_seconds", 0))


def prune_registry(registry_key: str, consumers_: Sequence[str]) -> Op[None]:
    """Remove stale worker records."""
    if consumers_:
        check((yield [("HDEL", registry_key, *consumers_)])[0])


def ping() -> Op[None]:
    """PING: Redis answers (raises its error otherwise; an ACL user needs +ping)."""
    (reply,) = yield [("PING",)]
    check(reply)
