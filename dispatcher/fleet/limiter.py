"""The rate-limit gate of the admitter: which tasks waiting in a capability's limited set may go onto its stream
now, taking their units from each named limit by GCRA (docs/flow-control.md).

A limit lives under its own hash tag (capabilities share it), so taking its units and moving the task are two
steps: units are taken first, then the task is moved (``admit.lua`` with the chosen ids). A crash between the two
loses those units (the limit is under-used for a moment: never over), never the task, which still waits. A task
whose limit has no room now is passed over, and the ones behind it that take units from other limits still go:
one exhausted limit never holds up the others. Units taken for a task whose second limit refused are refunded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dispatcher.store import codec, flow, limits
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.limits import Taken

log = logging.getLogger(__name__)


class LimitGate:
    """Admits rate-limited tasks of capabilities, within the window, while their limits have room."""

    def __init__(self, gateway: Gateway, keyspace: KeySpace, window: int, max_payload_bytes: int) -> None:
        self.gateway = gateway
        self.keyspace = keyspace
        self.window = window
        self.max_payload_bytes = max_payload_bytes

    def admit(self, every: Sequence[CapabilityKeys], counts: Sequence[tuple[int, int]]) -> tuple[int, int]:
        """One pass over every capability whose limited or keyed set holds tasks (``counts``: how many each holds,
        in the order of ``every``); (tasks moved, tasks still waiting for a limit)."""
        blocked: set[str] = set()  # limits found without room in this pass: not asked again until the next
        moved = left = 0
        for keys, sizes in zip(every, counts, strict=True):
            for waiting, size in zip((keys.limited, keys.keyed), sizes, strict=True):
                if size:
                    step, rest = self._capability(keys, waiting, blocked)
                    moved += step
                    left += rest
        return moved, left

    def _capability(self, keys: CapabilityKeys, waiting: str, blocked: set[str]) -> tuple[int, int]:
        candidates, unread = self.gateway.run(flow.peek(keys, waiting, self.window))
        room = self.window - unread
        if not candidates:
            return 0, 0
        if room <= 0:
            return 0, len(candidates)
        gated = [(task_id, *codec.gates_of(blob, self.max_payload_bytes)) for task_id, blob in candidates]
        cap, running = self._holders(keys, gated)
        chosen: list[tuple[str, str | None]] = []
        for task_id, wanted, key in gated:
            if len(chosen) >= room:
                break
            if key is not None and running.get(key, 0) >= cap:
                continue  # its key is at its cap: it waits, the tasks of other keys go
            if self._take_all(wanted, blocked):
                chosen.append((task_id, key))
                if key is not None:
                    running[key] = running.get(key, 0) + 1
        if not chosen:
            return 0, len(candidates)
        return self.gateway.run(flow.admit_chosen(keys, waiting, chosen))

    def _holders(
        self, keys: CapabilityKeys, gated: list[tuple[str, dict[str, int], str | None]]
    ) -> tuple[int, dict[str, int]]:
        """The capability's per-key cap (0 when none is set, which submit refuses: the task waits until one is)
        and the permits held per concurrency key of these candidates."""
        wanted = sorted({key for _, _, key in gated if key is not None})
        if not wanted:
            return 0, {}
        (cap,) = self.gateway.run(flow.caps([keys]))
        return cap or 0, self.gateway.run(flow.holders(keys, wanted))

    def _take_all(self, wanted: dict[str, int], blocked: set[str]) -> bool:
        """Take every limit's units for one task, or none of them."""
        if any(name in blocked for name in wanted):
            return False
        taken: list[tuple[str, int]] = []
        for name, units in sorted(wanted.items()):
            outcome, _ = self.gateway.run(limits.take(self.keyspace.limit(name), units))
            if outcome is Taken.TAKEN:
                taken.append((name, units))
                continue
            if outcome is not Taken.NOT_NOW:  # deleted or shrunk since the submit: the task waits (stats say so)
                log.warning("rate limit refuses a waiting task limit=%s outcome=%s", name, outcome.name)
            blocked.add(name)
            for done, count in taken:
                self.gateway.run(limits.take(self.keyspace.limit(done), -count))
            return False
        return True
