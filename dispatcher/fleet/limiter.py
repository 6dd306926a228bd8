"""The rate-limit gate of the admitter: which tasks waiting in a capability's limited (or keyed) set may go onto
its stream now, taking their units from each named limit by GCRA (docs/flow-control.md).

A limit lives under its own hash tag (capabilities share it), so taking its units and moving the task are two
steps: units are taken first, then the task is moved (``admit.lua`` with the chosen ids). A crash between the two
loses those units (the limit is under-used for a moment: never over), never the task, which still waits. A pass
reads the limits' state and the keys' permits once (one round trip), chooses in rank order the tasks whose key has
a free permit and whose limits have room (a task held back is passed over, and the ones behind it that take units
from other limits or have other keys still go: no head-of-line blocking), then takes each limit's units for all
the chosen tasks in one ``take.lua`` call per limit (the fair gate does the same: ``take_units``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dispatcher.fleet import fairplan
from dispatcher.fleet.fairplan import Candidate, Tenant
from dispatcher.store import codec, fair, flow, limits
from dispatcher.store.fair import Gates
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.limits import Taken

log = logging.getLogger(__name__)

NO_GATES = Gates({}, 0.0, 0, {})


class LimitGate:
    """Admits rate-limited (and keyed) tasks of capabilities, within the window, while their gates allow."""

    def __init__(self, gateway: Gateway, keyspace: KeySpace, window: int, max_payload_bytes: int) -> None:
        self.gateway = gateway
        self.keyspace = keyspace
        self.window = window
        self.max_payload_bytes = max_payload_bytes

    def admit(
        self, every: Sequence[CapabilityKeys], counts: Sequence[tuple[int, int]] | None = None
    ) -> tuple[int, int]:
        """One pass over every capability whose limited or keyed set holds tasks (``counts``: how many each holds,
        in the order of ``every``, read now when not given); (tasks moved, tasks still waiting for a limit)."""
        if counts is None:
            counts = self.gateway.run(flow.waiting_for_limits(every))
        moved = left = 0
        for keys, sizes in zip(every, counts, strict=True):
            for waiting, size in zip((keys.limited, keys.keyed), sizes, strict=True):
                if size:
                    step, rest = self._capability(keys, waiting)
                    moved += step
                    left += rest
        return moved, left

    def _capability(self, keys: CapabilityKeys, waiting: str) -> tuple[int, int]:
        candidates, unread = self.gateway.run(flow.peek(keys, waiting, self.window))
        room = self.window - unread
        if not candidates:
            return 0, 0
        if room <= 0:
            return 0, len(candidates)
        gated = [Candidate(task_id, *codec.gates_of(blob, self.max_payload_bytes)) for task_id, blob in candidates]
        gates = read_gates(self.gateway, self.keyspace, keys, gated)
        # One tenant: each turn takes the best-ranked task that may go now, as the fair gate does per tenant.
        plan = fairplan.plan([Tenant(0.0, 1.0, gated)], room, gates)
        chosen = take_units(self.gateway, self.keyspace, plan)
        if not chosen:
            return 0, len(candidates)
        return self.gateway.run(flow.admit_chosen(keys, waiting, [(c.task_id, c.key) for c in chosen]))


def read_gates(gateway: Gateway, keyspace: KeySpace, keys: CapabilityKeys, candidates: Sequence[Candidate]) -> Gates:
    """The state of the limits and the permits of the keys that ``candidates`` name (no round trip for none)."""
    names = sorted({n for c in candidates for n in c.units})
    keyed = sorted({c.key for c in candidates if c.key is not None})
    if not names and not keyed:
        return NO_GATES
    return gateway.run(fair.gates(keyspace, keys, names, keyed))


def take_units(gateway: Gateway, keyspace: KeySpace, plan: fairplan.Plan) -> list[fair.Choice]:
    """Take the plan's units, one call per limit for the sum of its chosen tasks; the choices whose units were all
    taken. A limit that refuses its sum (a handler's debit or a pause since the read) keeps its tasks waiting, and
    the units their other limits gave are refunded."""
    if not plan.units:
        return plan.chosen
    names = list(plan.units)
    outcomes = gateway.run(limits.take_many([(keyspace.limit(n), plan.units[n]) for n in names]))
    refused = {n for n, outcome in zip(names, outcomes, strict=True) if outcome is not Taken.TAKEN}
    if not refused:
        return plan.chosen
    for name, outcome in zip(names, outcomes, strict=True):
        if outcome not in (Taken.TAKEN, Taken.NOT_NOW):  # deleted or shrunk since the submit: the tasks wait
            log.warning("rate limit refuses waiting tasks limit=%s outcome=%s", name, outcome.name)
    kept, refund = fairplan.without(plan, refused)
    if refund:
        gateway.run(limits.take_many([(keyspace.limit(n), -u) for n, u in refund.items()]))
    return kept
