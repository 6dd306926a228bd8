"""Operations that take a capability out of the fleet: drop its keys, leave the capability set, look again."""

from __future__ import annotations

from dispatcher.store import scripts, wire
from dispatcher.store.gateway import Op, check
from dispatcher.store.keys import GROUP, CapabilityKeys


def drop(keys: CapabilityKeys, purge_dead: bool) -> Op[wire.Dropped]:
    """Delete the capability's stream, index, delayed set (and dead letters with ``purge_dead``), only if it holds
    no task (``drop.lua``)."""
    script_keys = [keys.stream, keys.index, keys.delayed, keys.dead]
    reply = (yield [scripts.call("drop", script_keys, [GROUP, 1 if purge_dead else 0])])[0]
    return wire.dropped(check(reply))


def leave_set(capabilities_key: str, name: str) -> Op[None]:
    """Remove ``name`` from the fleet-wide capability set."""
    check((yield [("SREM", capabilities_key, name)])[0])


def has_tasks(keys: CapabilityKeys) -> Op[bool]:
    """Whether the capability's stream, index or delayed set exists (after a drop: a submit wrote since)."""
    return bool(check((yield [("EXISTS", keys.stream, keys.index, keys.delayed)])[0]))
