"""The admitter: moves waiting tasks onto each capability's stream, keeping at most ``Settings.flow_window``
undelivered entries on it: tasks with a priority from the ready set best rank first, then the limit gate's, then
the fair gate's (tenants in weighted virtual-time order).

One process at a time holds the admitter's lease (``P:admitter:lease``), as with the mover. The holder ticks every
``INTERVAL_S`` while tasks wait and every ``IDLE_S`` while none does; the others only try the lease every
``STANDBY_S``, so a fleet of many workers does not poll Redis at the admitter's pace. A task waits in the ready
set only while its stream already holds a window of unread entries (submit's fast path admits it at once
otherwise), so the tick bounds how late a freed window is refilled, not how late a task on an idle capability
starts. While passes move tasks, the holder runs them back to back, and after a tick that moved an eighth of the
window or more it looks again after ``BUSY_S`` (doubling up to ``INTERVAL_S`` after ticks that moved less): at
thousands of tasks a second workers read a window in a few milliseconds, and a 10 ms pause would leave them idle
(it capped a drain of tasks with priorities at about 15,000/s).
"""

from __future__ import annotations

import time

from dispatcher.fleet.fairgate import FairGate
from dispatcher.fleet.limiter import LimitGate
from dispatcher.store import flow, liveness, streams
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

INTERVAL_S = 0.01
"""How often the lease holder refills the windows while tasks wait and none moved lately: the most a freed
window stays empty."""
BUSY_S = 0.001
"""The pause after a tick that moved an eighth of the window or more (doubled after each tick that moved less, up
to ``INTERVAL_S``)."""
IDLE_S = 0.1
"""How often it looks while no ready set holds a task (a task waits there only once its stream holds a window
of unread entries, which its workers need time to read), as the mover does: plain capabilities cost 10 cheap
calls per second, not 100."""
STANDBY_S = 0.5
"""How often a process that does not hold the lease tries to take it (and the holder renews it)."""
LEASE_MS = 2000
PASSES = 8
"""Admission passes per tick while each pass still moves tasks (workers drain a window during a pass)."""
TICK_S = 0.2
"""The most one tick runs passes for (then the lease is checked again)."""


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
        self.fair = FairGate(gateway, keyspace, window, max_payload_bytes)
        self._pause_s = INTERVAL_S

    def tick(self) -> int:
        """Take or renew the lease when due and, while held, admit; returns how many tasks moved."""
        now = time.monotonic()
        if now - self._lease_checked >= STANDBY_S:
            self._held = self.gateway.run(liveness.lease(self.keyspace.admitter_lease, self.owner, LEASE_MS))
            self._lease_checked = now
        if not self._held or now < self._next_s:
            self._pause_s = INTERVAL_S
            return 0
        moved, left = self.admit()
        self._next_s = now + (IDLE_S if moved == 0 and left == 0 else 0.0)
        # Quick again only while ticks move a good part of the window: workers drain it faster than a 10 ms tick
        # refills it. A backlog that a rate limit meters out (a task or two per tick) keeps the 10 ms pace.
        busy = moved >= max(self.window // 8, 1)
        self._pause_s = BUSY_S if busy else min(self._pause_s * 2, INTERVAL_S)
        return moved

    def pause_s(self) -> float:
        """How long the upkeep loop waits before the next tick: ``BUSY_S`` after a tick that moved an eighth of the
        window or more, doubling after ticks that moved less, ``INTERVAL_S`` at most (and while this process does
        not hold the lease)."""
        return self._pause_s

    def admit(self) -> tuple[int, int]:
        """Admit waiting tasks of every known capability now (lease or not), pass after pass while they move and
        some still wait (at most ``PASSES``, for at most ``TICK_S``); returns (how many moved, how many still
        wait)."""
        names = self.gateway.run(streams.known_capabilities(self.keyspace.capabilities))
        keys = [self.keyspace.capability(name) for name in names]
        started = time.monotonic()
        moved = left = 0
        for _ in range(PASSES):
            survey = self.gateway.run(flow.survey(keys, self.window))
            limited, waiting = self.gate.admit(keys, survey.limited)
            fair, tenants = self.fair.admit(keys, survey.tenants, survey.rejoin)
            step = survey.moved + limited + fair
            left = survey.ready + waiting + tenants
            moved += step
            if step == 0 or left == 0 or time.monotonic() - started > TICK_S:
                break
        return moved, left

    def release(self) -> None:
        """Give up the lease (if held), so another process takes over at its next try."""
        self._held = False
        self.gateway.run(liveness.lease(self.keyspace.admitter_lease, self.owner, 0))
