"""Operator API for steering and inspecting the fleet: pause and resume a capability, list its running tasks.

Pausing sets a flag in Redis (``store/control.py``); every worker reads it with its next heartbeat and stops
starting that capability's tasks (those already running finish); ``submit()`` still accepts tasks, which wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.errors import ConfigError, DecodeError
from dispatcher.store import codec, control, liveness, pending
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace
from dispatcher.task import check_capability


@dataclass(frozen=True, slots=True)
class RunningTask:
    """One pending (delivered, unsettled) entry of a capability."""

    entry_id: str
    task_id: str
    """"" when the entry could not be decoded, or was deleted from the stream."""
    owner: str
    owner_alive: bool
    """Whether the owner's heartbeat for this capability exists."""
    idle_s: float
    """Seconds since the entry was delivered."""
    deliveries: int
    """Redis' delivery count of this entry (a reclaimed task is a fresh entry: see ``attempt``)."""
    attempt: int
    """The task's attempt (1-based), carried in the entry; 0 when the entry could not be decoded."""


class FleetControl:
    """Pause, resume and inspect capabilities.

    Args:
        gateway: where to send the commands.
        keyspace: the key space (prefix) of the fleet.
        max_payload_bytes: decode limit for the entries ``running`` reads.
    """

    def __init__(self, gateway: Gateway, keyspace: KeySpace, max_payload_bytes: int = 1 << 20) -> None:
        self.gateway = gateway
        self.keyspace = keyspace
        self.max_payload_bytes = max_payload_bytes

    def set_paused(self, capability: str, paused: bool) -> bool:
        """Pause or resume ``capability``; True when the flag changed (False: it was already so).

        Raises:
            ConfigError: not a capability name, or one Redis does not know (nothing submitted to or served it).
        """
        self._known(capability)
        return self.gateway.run(control.set_paused(self.keyspace.capability(capability), paused))

    def running(self, capability: str, min_idle_s: float = 0.0, limit: int = 100) -> list[RunningTask]:
        """Up to ``limit`` running tasks of ``capability``, oldest delivery first, idle at least ``min_idle_s``.

        Four small round trips: the capability set, the pending entries, their stream entries, their owners' heartbeats.

        Raises:
            ConfigError: not a capability name, or one Redis does not know.
        """
        self._known(capability)
        keys = self.keyspace.capability(capability)
        found = self.gateway.run(pending.idle(keys, int(min_idle_s * 1000), limit))
        if not found:
            return []
        owners = sorted({p.consumer for p in found})
        fields = self.gateway.run(pending.entries(keys, [p.entry_id for p in found]))
        beating = self.gateway.run(liveness.alive([keys.heartbeat(o) for o in owners]))
        alive = dict(zip(owners, beating, strict=True))
        out = []
        for p, entry in zip(found, fields, strict=True):
            task_id, attempt = self._identify(capability, p.entry_id, entry)
            idle_s = p.idle_ms / 1000
            out.append(RunningTask(p.entry_id, task_id, p.consumer, alive[p.consumer], idle_s, p.deliveries, attempt))
        return out

    def _identify(self, capability: str, entry_id: str, entry: dict[bytes, bytes] | None) -> tuple[str, int]:
        if entry is None:
            return "", 0
        try:
            d = codec.decode_entry(capability, entry_id, entry, self.max_payload_bytes)
        except DecodeError:
            return "", 0
        return d.task.id, d.attempt

    def _known(self, capability: str) -> None:
        try:
            check_capability(capability)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not self.gateway.run(control.known(self.keyspace.capabilities, capability)):
            raise ConfigError(f"unknown capability {capability!r}: nothing was ever submitted to it or served it")
