"""Operations of flow control on a capability's keys: admitting waiting tasks with a priority onto the stream, and
counting what waits for admission (docs/flow-control.md)."""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.store import scripts, wire
from dispatcher.store.gateway import Op, check, text
from dispatcher.store.keys import GROUP, CapabilityKeys


def admit(every: Sequence[CapabilityKeys], window: int) -> Op[tuple[int, int]]:
    """Move the best-ranked waiting tasks of each capability onto its stream, up to ``window`` undelivered entries
    per stream (``admit.lua``), every capability in one round trip; returns (how many moved, how many still wait
    in the ready sets after the move)."""
    if not every:
        return 0, 0
    replies = yield [scripts.call("admit", [k.stream, k.index, k.ready], [window]) for k in every]
    pairs = [wire.admitted(check(r)) for r in replies]
    return sum(moved for moved, _ in pairs), sum(left for _, left in pairs)


def admit_chosen(keys: CapabilityKeys, task_ids: Sequence[str]) -> Op[tuple[int, int]]:
    """Move exactly ``task_ids`` from the capability's limited set onto its stream (their units are taken);
    (how many moved, how many still wait in the limited set)."""
    reply = yield [scripts.call("admit", [keys.stream, keys.index, keys.limited], [0, *task_ids])]
    return wire.admitted(check(reply[0]))


def peek_limited(keys: CapabilityKeys, count: int) -> Op[tuple[list[tuple[str, bytes]], int]]:
    """The ``count`` best-ranked tasks waiting in the limited set, each with its task blob, and how many entries
    wait unread on the stream (XLEN minus pending: settled entries are deleted)."""
    ranked, length, summary = yield [
        ("ZRANGE", keys.limited, 0, count - 1),
        ("XLEN", keys.stream),
        ("XPENDING", keys.stream, GROUP),
    ]
    ids = [text(i) for i in check(ranked)]
    running = 0 if isinstance(summary, Exception) else int(summary["pending"])  # NOGROUP: nobody read any
    unread = int(check(length)) - running
    if not ids:
        return [], unread
    places = check((yield [("HMGET", keys.index, *ids)])[0])
    out = []
    for task_id, raw in zip(ids, places, strict=True):
        place = wire.place(raw)
        if isinstance(place, wire.Delayed):
            out.append((task_id, place.blob))
    return out, unread


def waiting(every: Sequence[CapabilityKeys]) -> Op[list[int]]:
    """How many tasks wait for admission in each capability's ready set, in order."""
    if not every:
        return []
    replies = yield [("ZCARD", k.ready) for k in every]
    return [int(check(r)) for r in replies]


def waiting_for_limit(every: Sequence[CapabilityKeys]) -> Op[list[int]]:
    """How many tasks wait for rate limits in each capability's limited set, in order."""
    if not every:
        return []
    replies = yield [("ZCARD", k.limited) for k in every]
    return [int(check(r)) for r in replies]
