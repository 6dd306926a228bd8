"""The admitter: moves waiting tasks with a priority from each capability's ready set onto its stream, best rank
first, keeping at most ``Settings.flow_window`` undelivered entries on the stream.

One process at a time holds the admitter's lease (``P:admitter:lease``), as with the mover. The holder ticks every
``INTERVAL_S`` while tasks wait and every ``IDLE_S`` while none does; the others only try the lease every
``STANDBY_S``, so a fleet of many workers does not poll Redis at the admitter's pace. A task waits in the ready
set only while its stream already holds a window of unread entries (submit's fast path admits it at once
otherwise), so the tick bounds how late a freed window is refilled, not how late a task on an idle capability
starts.
"""

from __future__ import annotations

import time

from dispatcher.fleet.limiter import LimitGate
from dispatcher.store import flow, liveness, streams
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace

INTERVAL_S = 0.01
"""How often the lease holder refills the windows while tasks wait: the most a freed window stays empty."""
IDLE_S = 0.1
"""How often it looks while no ready set holds a task (a task waits there only once its stream holds a window
of unread entries, which its workers need time to read), as the mover does: plain capabilities cost 10 cheap
calls per second, not 100."""
STANDBY_S = 0.5
"""How often a process that does not hold the lease tries to take it (and the holder renews it)."""
LEASE_MS = 2000
PASSES = 8
"""Admission passes per tick while each pass still moves tasks (workers drain a window during a pass)."""


class Admitter:
    """Admits waiting tasks of every known capability while it holds the admitter's lease."""

    def __init__(
        self, gateway: Gateway, keyspace: KeySpace, owner: str, window: int, max_payload_bytes: int = 1 << 20
    ) -> None:
        self.gateway = gateway
        self.keyspace = keyspace
        self.owner = owner
        self.window = window
        self._held = False
        self._lease_checked = float("-inf")
        self._next_s = float("-inf")
        self.gate = LimitGate(gateway, keyspace, window, max_payload_bytes)

    def tick(self) -> int:
        """Take or renew the lease when due and, while held, admit; returns how many tasks moved."""
        now = time.monotonic()
        if now - self._lease_checked >= STANDBY_S:
            self._held = self.gateway.run(liveness.lease(self.keyspace.admitter_lease, self.owner, LEASE_MS))
            self._lease_checked = now
        if not self._held or now < self._next_s:
            return 0
        moved, left = self.admit()
        self._next_s = now + (IDLE_S if moved == 0 and left == 0 else 0.0)
        return moved

    def admit(self) -> tuple[int, int]:
        """Admit waiting tasks of every known capability now (lease or not); returns (how many moved, how many
        still wait)."""
        names = self.gateway.run(streams.known_capabilities(self.keyspace.capabilities))
        keys = [self.keyspace.capability(name) for name in names]
        moved = left = 0
        for _ in range(PASSES):
            step, left = self.gateway.run(flow.admit(keys, self.window))
            moved += step
            if step == 0 or left == 0:
                break
        limited, waiting = self.gate.admit(keys)
        fair, tenants = self._fair(keys)
        return moved + limited + fair, left + waiting + tenants

    def _fair(self, every: list[CapabilityKeys]) -> tuple[int, int]:
        """One pass of the fair admission over the capabilities whose tenants wait."""
        moved = left = 0
        for keys, tenants in zip(every, self.gateway.run(flow.fair_tenants(every, self.window)), strict=True):
            if tenants:
                step, rest = self.gateway.run(flow.admit_fair(keys, tenants, self.window))
                moved += step
                left += rest
        return moved, left

    def release(self) -> None:
        """Give up the lease (if held), so another process takes over at its next try."""
        self._held = False
        self.gateway.run(liveness.lease(self.keyspace.admitter_lease, self.owner, 0))
