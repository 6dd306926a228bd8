"""The fair gate of the admitter: admits tenants' tasks (``fairness_key``) in weighted virtual-time order, each
only when its own gates let it go: its concurrency key's cap and its rate limits' units (docs/flow-control.md).

One pass over a capability: read its lowest-virtual-time tenants and their best-ranked tasks (``peek_fair.lua``,
one round trip), read the limits and permits those tasks name (one round trip: the limits' hashes, ``TIME`` and
``count_permits.lua``), choose in weighted virtual-time order (``fairplan``), take each limit's units for all
the chosen tasks at once (one ``take.lua`` call per limit, on its own slot), then move the chosen tasks
(``admit_fair.lua``, one call on the capability's slot, which verifies each is still queued). Units are taken
before the move: a crash between the two under-uses a limit, and never loses a task, which still waits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from dispatcher.fleet import fairplan
from dispatcher.fleet.fairplan import Candidate, Tenant
from dispatcher.fleet.limiter import read_gates, take_units
from dispatcher.store import codec, fair, flow, wire
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace

EXTRA = 4
"""Tasks peeked per tenant beyond its turns in the room left: how deep the gate looks into a tenant's queue for a
task that may go while the ones ahead of it are held back (and how many a tenant without a turn shows)."""
REJOIN = 1024
"""Tasks moved from a capability's rejoin set into their tenants' queues per pass."""
SEEN = 8192
"""Decoded gates kept by waiting record (a task waiting several passes is decoded once); cleared when this many."""
NOTE_EVERY_S = 0.5
"""How often the snapshot of held-back tenants' tasks (for stats) is rewritten while it stays the same."""


class FairGate:
    """Admits tenants' tasks of capabilities, within the window, while their keys and limits allow."""

    def __init__(self, gateway: Gateway, keyspace: KeySpace, window: int, max_payload_bytes: int) -> None:
        self.gateway = gateway
        self.keyspace = keyspace
        self.window = window
        self.max_payload_bytes = max_payload_bytes
        self._seen: dict[bytes, tuple[dict[str, int], str | None]] = {}
        # Per capability, the tenants held back in its last pass: the next peek shows the others enough tasks to
        # take their turns too.
        self._held: dict[str, set[str]] = {}
        # Per capability, the held-back counts last written for stats and when (monotonic seconds).
        self._noted: dict[str, tuple[tuple[int, int], float]] = {}

    def admit(
        self,
        every: Sequence[CapabilityKeys],
        tenants_of: Sequence[list[str]] | None = None,
        rejoining: Sequence[int] | None = None,
    ) -> tuple[int, int]:
        """One pass over every capability whose tenants wait (``tenants_of``: each one's waiting tenants of lowest
        virtual time, read now when not given), after moving the tasks of its rejoin set into their tenants'
        queues (``rejoining``: how many each holds; all are looked at when not given); (tasks moved onto the
        streams, tenants still waiting)."""
        if tenants_of is None:
            tenants_of = self.gateway.run(flow.fair_tenants(every, self.window))
        moved = left = 0
        for i, (keys, waiting) in enumerate(zip(every, tenants_of, strict=True)):
            tenants = self._rejoin(keys, waiting) if rejoining is None or rejoining[i] else waiting
            if tenants:
                step, rest = self._capability(keys, tenants)
                moved += step
                left += rest
        return moved, left

    def _rejoin(self, keys: CapabilityKeys, tenants: list[str]) -> list[str]:
        """Move the capability's tasks back from a delay, a retry or the dead letters into their tenants' queues
        (``REJOIN`` at a time); its waiting tenants of lowest virtual time, read again when any moved."""
        if not self.gateway.run(fair.rejoin(keys, REJOIN, self.max_payload_bytes)):
            return tenants
        return self.gateway.run(flow.fair_tenants([keys], self.window))[0]

    def _capability(self, keys: CapabilityKeys, names: list[str]) -> tuple[int, int]:
        held = self._held.get(keys.capability, set())
        room, peeked = self.gateway.run(fair.peek(keys, names, self.window, EXTRA, held))
        if room <= 0 or not peeked:
            if room <= 0:  # nothing peeked: the last snapshot still stands, kept from expiring
                self._write_note(keys, self._noted.get(keys.capability, ((0, 0), 0.0))[0])
            return 0, (len(peeked) if room > 0 else len(names))
        tenants = [Tenant(t.vtime, t.weight, [self._candidate(i, b) for i, b in t.tasks]) for t in peeked]
        gates = read_gates(self.gateway, self.keyspace, keys, [c for t in tenants for c in t.candidates])
        plan = fairplan.plan(tenants, room, gates)
        self._held[keys.capability] = {t.tenant for t, h in zip(peeked, plan.held_back, strict=True) if h}
        self._note(keys, peeked, plan.held_by)
        chosen = take_units(self.gateway, self.keyspace, plan)
        if not chosen:
            return 0, len(peeked)
        return self.gateway.run(fair.admit_chosen(keys, [t.tenant for t in peeked], plan.held_back, chosen))

    def _note(self, keys: CapabilityKeys, peeked: Sequence[wire.TenantPeek], held_by: dict[int, str]) -> None:
        """Tell stats how many tasks wait behind a limit or a key: a held-back tenant's whole queue counts as held
        by what held back its peeked tasks (a snapshot of the tenants this pass peeked, rewritten on a change
        and every ``NOTE_EVERY_S``; it expires if no gate writes it)."""
        counts = (
            sum(peeked[i].length for i, why in held_by.items() if why == "limit"),
            sum(peeked[i].length for i, why in held_by.items() if why == "key"),
        )
        self._write_note(keys, counts)

    def _write_note(self, keys: CapabilityKeys, counts: tuple[int, int]) -> None:
        last, at = self._noted.get(keys.capability, ((0, 0), 0.0))
        now = time.monotonic()
        if counts == last and (counts == (0, 0) or now - at < NOTE_EVERY_S):
            return
        self.gateway.run(fair.note_held(keys, *counts))
        self._noted[keys.capability] = (counts, now)

    def _candidate(self, task_id: str, record: bytes | None) -> Candidate:
        if record is None:
            return Candidate(task_id, stale=True)
        found = self._seen.get(record)  # a task that waits several passes is decoded once
        if found is None:
            delayed = wire.delayed_of(record)
            if delayed is None:
                return Candidate(task_id, stale=True)
            if len(self._seen) >= SEEN:
                self._seen.clear()
            found = self._seen[record] = codec.gates_of(delayed.blob, self.max_payload_bytes)
        return Candidate(task_id, found[0], found[1])
