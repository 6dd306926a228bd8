"""The fair gate's plan, sans-IO: which of the peeked tenants' tasks go onto the stream in one pass, in weighted
virtual-time order, each only while its concurrency key holds fewer permits than the cap and its rate limits
have room for its units (docs/flow-control.md, "Fairness across tenants").

The order is start-time fair queueing over the tenants' virtual times, as ``admit_fair.lua`` then records it:
the tenant of lowest virtual time goes next and advances by ``1 / weight``. A tenant's turn takes its
best-ranked task that its gates let go now (a task held back by its key or a limit is passed over, so the tasks
behind it still go). A tenant none of whose peeked tasks may go leaves this pass *held back*: it does not take
turns, the others do (no head-of-line blocking across tenants), and the commit treats it as idle (its virtual
time is raised to the lowest start time of the tenants admitted), so it banks no credit while blocked.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from dispatcher.store.fair import Choice, Gates


@dataclass(frozen=True, slots=True)
class Candidate:
    """A peeked task: its id, the units it takes per rate limit, its concurrency key; ``stale`` when its index
    field is no waiting record any more (it is dropped from its queue, taking no turn)."""

    task_id: str
    units: dict[str, int] = field(default_factory=dict)
    key: str | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Tenant:
    """A peeked tenant: virtual time, weight, and its candidates in rank order (best first)."""

    vtime: float
    weight: float
    candidates: Sequence[Candidate]


@dataclass(slots=True)
class Plan:
    """The pass's choices in admission order, the units to take per limit (their sum), and per tenant whether it
    was held back."""

    chosen: list[Choice]
    units: dict[str, int]
    held_back: list[bool]
    takes: list[dict[str, int]] = field(default_factory=list)
    """Per choice (same places as ``chosen``), the units it takes per limit."""
    held_by: dict[int, str] = field(default_factory=dict)
    """Per tenant held back (its place): ``"limit"`` when a rate limit held back one of its tasks, else ``"key"``."""


def plan(tenants: Sequence[Tenant], room: int, gates: Gates) -> Plan:
    """Choose up to ``room`` admissions among ``tenants``' candidates under ``gates``."""
    available = {n: (s.available(gates.now_ms) if s is not None else -1) for n, s in gates.limits.items()}
    running = dict(gates.held)
    out = Plan([], {}, [False] * len(tenants))
    left: list[list[Candidate]] = []
    for i, tenant in enumerate(tenants):
        left.append([c for c in tenant.candidates if not c.stale])
        for c in tenant.candidates:
            if c.stale:
                out.chosen.append(Choice(i, c.task_id, None))
                out.takes.append({})
    queue = [(t.vtime, i) for i, t in enumerate(tenants) if left[i]]
    heapq.heapify(queue)
    while room > 0 and queue:
        vtime, i = heapq.heappop(queue)
        found = next((c for c in left[i] if _fits(c, gates.cap, running, available)), None)
        if found is None:
            out.held_back[i] = True
            out.held_by[i] = "limit" if any(not _has_room(c, available) for c in left[i]) else "key"
            continue
        left[i].remove(found)
        room -= 1
        if found.key is not None:
            running[found.key] = running.get(found.key, 0) + 1
        for name, units in found.units.items():
            available[name] -= units
            out.units[name] = out.units.get(name, 0) + units
        out.chosen.append(Choice(i, found.task_id, found.key))
        out.takes.append(found.units)
        if left[i]:
            heapq.heappush(queue, (vtime + 1 / tenants[i].weight, i))
    return out


def _fits(candidate: Candidate, cap: int, running: dict[str, int], available: dict[str, int]) -> bool:
    if candidate.key is not None and running.get(candidate.key, 0) >= cap:
        return False  # at its key's cap (or no cap set: submit refuses that, the task waits until one is)
    return _has_room(candidate, available)


def _has_room(candidate: Candidate, available: dict[str, int]) -> bool:
    return all(available.get(name, -1) >= units for name, units in candidate.units.items())


def without(p: Plan, refused: set[str]) -> tuple[list[Choice], dict[str, int]]:
    """The choices left once the limits ``refused`` their sums (their tasks wait for the next pass), and the units
    to give back to the other limits, which were taken for the tasks dropped."""
    kept: list[Choice] = []
    refund: dict[str, int] = {}
    for choice, takes in zip(p.chosen, p.takes, strict=True):
        if refused.isdisjoint(takes):
            kept.append(choice)
            continue
        for name, units in takes.items():
            if name not in refused:
                refund[name] = refund.get(name, 0) + units
    return kept, refund
