"""Operations of flow control on a capability's keys: admitting waiting tasks with a priority onto the stream, and
counting what waits for admission (docs/flow-control.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Survey:
    """One admission pass's first round trip: tasks with a priority moved (``admit``) and still waiting in the
    ready sets, and per capability, in order, the tasks waiting in its limited and keyed sets, its waiting
    tenants of lowest virtual time and the tasks in its rejoin set."""

    moved: int
    ready: int
    limited: list[tuple[int, int]]
    tenants: list[list[str]]
    rejoin: list[int]


def survey(every: Sequence[CapabilityKeys], window: int) -> Op[Survey]:
    """``admit`` for every capability, and what waits for the limit gate and the fair gate, in one round trip (so
    a pass costs one round trip while only the plain and priority paths have work)."""
    if not every:
        return Survey(0, 0, [], [], [])
    commands: list[Any] = [scripts.call("admit", [k.stream, k.index, k.ready], [window]) for k in every]
    for k in every:
        commands += [("ZCARD", k.limited), ("ZCARD", k.keyed), ("ZRANGE", k.tenants, 0, window - 1)]
        commands.append(("ZCARD", k.rejoin))
    replies = yield commands
    pairs = [wire.admitted(check(r)) for r in replies[: len(every)]]
    rest = [check(r) for r in replies[len(every) :]]
    return Survey(
        sum(moved for moved, _ in pairs),
        sum(left for _, left in pairs),
        [(int(rest[4 * i]), int(rest[4 * i + 1])) for i in range(len(every))],
        [[text(t) for t in rest[4 * i + 2]] for i in range(len(every))],
        [int(rest[4 * i + 3]) for i in range(len(every))],
    )


def admit_chosen(keys: CapabilityKeys, waiting: str, chosen: Sequence[tuple[str, str | None]]) -> Op[tuple[int, int]]:
    """Move exactly the ``chosen`` tasks (task id, concurrency key or None) from the capability's ``waiting`` set
    (limited or keyed) onto its stream, each keyed one taking a permit of its key in the same step; (how many
    moved, how many still wait in that set)."""
    script_keys = [keys.stream, keys.index, waiting]
    slots: dict[str, int] = {}
    args: list[Any] = [0]
    for task_id, key in chosen:
        slot = 0
        if key is not None:
            slot = slots.get(key, 0)
            if not slot:
                script_keys.append(keys.permits(key))
                slot = slots[key] = len(script_keys)
        args += [task_id, slot]
    reply = yield [scripts.call("admit", script_keys, args)]
    return wire.admitted(check(reply[0]))


def holders(keys: CapabilityKeys, concurrency_keys: Sequence[str]) -> Op[dict[str, int]]:
    """How many permits of each key are held by a task on the stream or running (its index value is an entry id);
    the stale members are removed: a settled or buried task (no index field), and a task in a retry's backoff or
    waiting again (a delayed or waiting record), which takes a permit again when it is admitted.

    The cost is bounded by the permit sets' sizes: the gate adds a member only after this count found the key
    under its cap, so a set holds at most the cap's worth of members plus those admitted in the same pass."""
    if not concurrency_keys:
        return {}
    members = yield [("ZRANGE", keys.permits(k), 0, -1) for k in concurrency_keys]
    ids = {k: [text(m) for m in check(r)] for k, r in zip(concurrency_keys, members, strict=True)}
    every = [t for k in concurrency_keys for t in ids[k]]
    alive = set(every)
    if every:
        found = check((yield [("HMGET", keys.index, *every)])[0])
        alive = {t for t, v in zip(every, found, strict=True) if v is not None and v[:1] != b"d"}
    stale = [(k, gone) for k in concurrency_keys if (gone := [t for t in ids[k] if t not in alive])]
    if stale:
        for reply in (yield [("ZREM", keys.permits(k), *gone) for k, gone in stale]):
            check(reply)
    return {k: sum(1 for t in ids[k] if t in alive) for k in concurrency_keys}


def caps(every: Sequence[CapabilityKeys]) -> Op[list[int | None]]:
    """Each capability's per-key concurrency cap, None where none is set."""
    if not every:
        return []
    replies = yield [("HGET", k.caps, "per_key") for k in every]
    return [None if check(r) is None else int(check(r)) for r in replies]


def set_cap(keys: CapabilityKeys, per_key: int) -> Op[None]:
    """Set the capability's per-key concurrency cap."""
    check((yield [("HSET", keys.caps, "per_key", per_key)])[0])


def peek(keys: CapabilityKeys, waiting: str, count: int) -> Op[tuple[list[tuple[str, bytes]], int]]:
    """The ``count`` best-ranked tasks of the capability's ``waiting`` set (limited or keyed), each with its task
    blob, and how many entries wait unread on the stream (XLEN minus pending: settled entries are deleted)."""
    ranked, length, summary = yield [
        ("ZRANGE", waiting, 0, count - 1),
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


def waiting_for_limits(every: Sequence[CapabilityKeys]) -> Op[list[tuple[int, int]]]:
    """Per capability, in order: tasks waiting for rate limits (limited set) and for their key's cap (keyed set)."""
    if not every:
        return []
    replies = yield [("ZCARD", s) for k in every for s in (k.limited, k.keyed)]
    return [(int(check(replies[2 * i])), int(check(replies[2 * i + 1]))) for i in range(len(every))]


def fair_tenants(every: Sequence[CapabilityKeys], count: int) -> Op[list[list[str]]]:
    """Per capability, up to ``count`` waiting tenants of lowest virtual time."""
    if not every:
        return []
    replies = yield [("ZRANGE", k.tenants, 0, count - 1) for k in every]
    return [[text(t) for t in check(r)] for r in replies]


def set_weight(keys: CapabilityKeys, tenant: str, weight: float) -> Op[None]:
    """Set a tenant's fairness weight."""
    check((yield [("HSET", keys.weights, tenant, repr(weight))])[0])
