"""The worker's core, sans-IO: which entries it holds (its slots) and what it reads next (the read plan).

A slot is taken when an entry is read and freed only when that entry's outcome is recorded in Redis (or given
up), so a worker's pending entries never exceed its concurrency: a worker that dies loses only what it really
held. A sync handler that outlived its task's timeout keeps a slot of its own (a *stray*) until its thread ends,
so the worker never runs more threads than slots. Nothing here does I/O or knows asyncio; ``workers.runtime``
drives it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dispatcher.store.codec import Delivery

Held = tuple[str, str]
"""(capability, entry id): what identifies an entry a worker holds (entry ids are unique within a stream only,
and two streams often hand out the same id in the same millisecond)."""


class Phase(Enum):
    """Where a held entry is: its handler runs, or its outcome waits to be recorded."""

    RUNNING = "running"
    SETTLING = "settling"


@dataclass(slots=True)
class Slot:
    """One held entry. ``delivery`` is None for an entry with nothing to run (undecodable, or deleted from the
    stream) that waits for its dead letter or its release; ``job`` is the driver's handle on the running handler."""

    delivery: Delivery | None
    phase: Phase
    job: Any = None


class SlotError(Exception):
    """A bookkeeping call that breaks the invariant (a bug in the driver, never a user error)."""


@dataclass(slots=True)
class Slots:
    """Every entry a worker holds, and the slots taken by stray handler threads.

    Invariant: ``len(held) + strays <= capacity``, so the entries a worker holds in Redis (its pending list) never
    exceed its concurrency.
    """

    capacity: int
    held: dict[Held, Slot] = field(default_factory=dict)
    strays: int = 0
    recent: set[Held] | None = None
    """While a read of the worker's own pending list is out (``watch``): the entries released meanwhile. That read
    may still return them (Redis answered it before their outcome was recorded), and they must not run again."""

    @property
    def free(self) -> int:
        """Slots a read may fill now."""
        return self.capacity - len(self.held) - self.strays

    def holds(self, key: Held) -> bool:
        return key in self.held

    def take(self, key: Held, delivery: Delivery | None, phase: Phase = Phase.RUNNING, force: bool = False) -> Slot:
        """Hold a just-read entry. Raises ``SlotError`` when no slot is free or the entry is held already.

        ``force`` holds it beyond the capacity: only for an entry a read returned beyond the free slots, which is
        handed back at once (see ``ReadPlanner``).
        """
        if key in self.held:
            raise SlotError(f"entry {key} is held already")
        if self.free <= 0 and not force:
            raise SlotError(f"no free slot for {key}: {len(self.held)} held, {self.strays} strays, {self.capacity}")
        slot = self.held[key] = Slot(delivery, phase)
        return slot

    def settling(self, key: Held) -> None:
        """The entry's handler is done; its outcome now waits to be recorded (the slot stays taken)."""
        self.held[key].phase = Phase.SETTLING

    def release(self, key: Held) -> Slot | None:
        """The entry's outcome is recorded (or given up): free its slot. Returns what was held (None if nothing)."""
        slot = self.held.pop(key, None)
        if slot is not None and self.recent is not None:
            self.recent.add(key)
        return slot

    def watch(self) -> None:
        """Start noting released entries (``recent``), before a read of the worker's own pending list is sent."""
        self.recent = set()

    def known(self, key: Held) -> bool:
        """Held now, or released since ``watch``: an entry a read of the own pending list must not start."""
        return key in self.held or (self.recent is not None and key in self.recent)

    def unwatch(self) -> None:
        """The read's reply is handled: stop noting."""
        self.recent = None

    def stray(self) -> None:
        """A timed-out sync handler's thread runs on after its entry was settled: it keeps a slot."""
        self.strays += 1

    def stray_ended(self) -> None:
        """A stray thread returned: its slot is free."""
        if self.strays <= 0:
            raise SlotError("no stray thread to end")
        self.strays -= 1

    def running(self) -> Iterator[tuple[Held, Slot]]:
        """The held entries whose handler runs."""
        return ((k, s) for k, s in self.held.items() if s.phase is Phase.RUNNING)

    def count(self, capability: str) -> int:
        """Entries of ``capability`` held now."""
        return sum(1 for cap, _ in self.held if cap == capability)


@dataclass(frozen=True, slots=True)
class Read:
    """One XREADGROUP: these capabilities' streams, at most ``count`` new entries from each, blocking or not."""

    capabilities: tuple[str, ...]
    count: int
    block: bool

    @property
    def most(self) -> int:
        """The most entries this read can return right away (a blocked read is served from one stream only)."""
        return self.count * len(self.capabilities)


@dataclass(slots=True)
class ReadPlanner:
    """A fair rotation over the capabilities a worker serves.

    With as many free slots as capabilities (the common case: one capability), one blocking read covers them all
    with ``free // n`` entries from each. With more capabilities than free slots, the planner scans them in turn,
    ``free`` streams at a time with one entry from each, starting each scan where the last one stopped, so every
    capability is read within ``ceil(n / free)`` reads; once a whole round found nothing, it blocks on all of them
    at once with one entry each. That blocking read can return more than ``free`` entries when several streams
    got work in the moment before it was sent: the driver hands the excess back at once (``excess``).
    """

    capabilities: tuple[str, ...]
    _next: int = 0
    _scanned_empty: int = 0
    """Capabilities scanned in a row without finding anything."""

    def plan(self, free: int, allowance: Mapping[str, int]) -> Read | None:
        """The next read for ``free`` slots; ``allowance`` caps each capability (its circuit). None: read nothing.

        A capability whose allowance is 0 is skipped; one whose allowance is below the fair share limits the
        count of the read that holds it.
        """
        open_caps = [c for c in self._rotated() if allowance.get(c, free) > 0]
        if free <= 0 or not open_caps:
            return None
        if len(open_caps) <= free:
            per = min([free // len(open_caps), *(allowance.get(c, free) for c in open_caps)])
            return Read(tuple(open_caps), max(per, 1), block=True)
        if self._scanned_empty >= len(open_caps):  # a whole round found nothing: wait on all of them at once
            return Read(tuple(open_caps), 1, block=True)
        return Read(tuple(open_caps[:free]), 1, block=False)

    def done(self, read: Read, got: int) -> None:
        """Record what ``read`` returned, to place the next scan and to know when a round found nothing."""
        self._scanned_empty = 0 if got or read.block else self._scanned_empty + len(read.capabilities)
        if not read.block:  # a blocking read covered every capability: the rotation stays where it is
            self._next = (self._next + len(read.capabilities)) % len(self.capabilities)

    @property
    def round_empty(self) -> bool:
        """Whether the scans since the last find covered every capability without finding anything."""
        return self._scanned_empty >= len(self.capabilities)

    def _rotated(self) -> list[str]:
        caps = list(self.capabilities)
        return caps[self._next :] + caps[: self._next]
