"""Operations of flow control on a capability's keys: admitting waiting tasks with a priority onto the stream, and
counting what waits for admission (docs/flow-control.md)."""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.store import scripts, wire
from dispatcher.store.gateway import Op, check
from dispatcher.store.keys import CapabilityKeys


def admit(every: Sequence[CapabilityKeys], window: int) -> Op[tuple[int, int]]:
    """Move the best-ranked waiting tasks of each capability onto its stream, up to ``window`` undelivered entries
    per stream (``admit.lua``), every capability in one round trip; returns (how many moved, how many still wait
    in the ready sets after the move)."""
    if not every:
        return 0, 0
    replies = yield [scripts.call("admit", [k.stream, k.index, k.ready], [window]) for k in every]
    pairs = [wire.admitted(check(r)) for r in replies]
    return sum(moved for moved, _ in pairs), sum(left for _, left in pairs)


def waiting(every: Sequence[CapabilityKeys]) -> Op[list[int]]:
    """How many tasks wait for admission in each capability's ready set, in order."""
    if not every:
        return []
    replies = yield [("ZCARD", k.ready) for k in every]
    return [int(check(r)) for r in replies]
