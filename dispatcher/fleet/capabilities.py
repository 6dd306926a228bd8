"""Forgetting a capability: take one that holds no task out of the fleet (its keys and its place in the set).

A capability enters the fleet-wide set when a task is submitted to it or a worker serves it, and stays there, so
a mistyped name would stay in ``dispatcher stats`` for good. ``forget`` removes one that nothing uses any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dispatcher.errors import ConfigError
from dispatcher.fleet.stats import CapabilityStats, collect
from dispatcher.store import retire, streams
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace
from dispatcher.store.wire import Dropped
from dispatcher.task import check_capability


class Verdict(Enum):
    """What ``forget`` did."""

    FORGOTTEN = "forgotten"
    UNKNOWN = "unknown"
    """Not in the capability set: nothing to forget."""
    SERVED = "served"
    """Kept: live workers serve it (they would add it back with their next heartbeat)."""
    BUSY = "busy"
    """Kept: tasks wait, run or are delayed."""
    DEAD_LETTERS = "dead_letters"
    """Kept: it has dead letters, and ``purge_dead`` was not given."""


@dataclass(frozen=True, slots=True)
class Forgetting:
    """The outcome of ``forget``, with the capability's counters as they were read before acting."""

    name: str
    verdict: Verdict
    stats: CapabilityStats | None


def forget(gateway: Gateway, keyspace: KeySpace, name: str, purge_dead: bool = False) -> Forgetting:
    """Delete the keys of capability ``name`` and remove it from the capability set, if nothing uses it.

    Refused while live workers serve it, while tasks wait, run or are delayed, and while it has dead letters
    unless ``purge_dead`` (they are deleted then). Its result records and idempotency keys expire on their own.

    The check-and-delete is one script in the capability's slot (``drop.lua``); the set is another slot, so it is
    left afterwards, then the capability is looked at again. A submit adds the capability to the set *before* its
    script writes the task: a submit whose script runs before the drop makes the drop refuse; one whose script
    runs between the drop and the second look is seen there, and the capability goes back into the set; one
    whose SADD comes after the SREM re-adds it itself. Left open: a producer that registered the capability
    before the forget and writes after the second look (a process caches what it registered, or stalled between
    its two round trips). Its task is kept and runs as soon as a worker serves the capability (workers add their
    capabilities back with every heartbeat), but ``stats`` lists it only from then.

    Raises:
        ConfigError: ``name`` is not a valid capability name.
        RedisUnavailable, RedisError: Redis could not be read or written.
    """
    try:
        check_capability(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    found = next((c for c in collect(gateway, keyspace).capabilities if c.name == name), None)
    if found is None:
        return Forgetting(name, Verdict.UNKNOWN, None)
    # These reads give the refusal its reason and counts; the script alone decides, atomically.
    if found.workers:
        return Forgetting(name, Verdict.SERVED, found)
    keys = keyspace.capability(name)
    dropped = gateway.run(retire.drop(keys, purge_dead))
    if dropped is not Dropped.DROPPED:
        return Forgetting(name, Verdict.BUSY if dropped is Dropped.BUSY else Verdict.DEAD_LETTERS, found)
    gateway.run(retire.leave_set(keyspace.capabilities, name))
    if gateway.run(retire.has_tasks(keys)):  # submitted since the drop: it stays known
        gateway.run(streams.register_capabilities(keyspace.capabilities, [name]))
        return Forgetting(name, Verdict.BUSY, found)
    return Forgetting(name, Verdict.FORGOTTEN, found)
