"""Operations of the fair gate on a capability's tenants: read the tenants and their best-ranked tasks
(``peek_fair.lua``), read the gates those tasks name (rate limits, and key caps and permits: ``count_permits.lua``),
commit the chosen admissions (``admit_fair.lua``), and move tasks that came back (a delay, a retry, a requeued dead
letter) into their tenants' queues (``rejoin.lua``) (docs/flow-control.md, "Fairness across tenants")."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from dispatcher.store import codec, limits, scripts, wire
from dispatcher.store.gateway import Command, Op, check, text
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.limits import LimitState


@dataclass(frozen=True, slots=True)
class Gates:
    """What the gates of a pass look like now: each named limit's state (None: not defined), Redis' clock (epoch
    ms), the capability's per-key cap (0 when none is set) and the live permits held per concurrency key."""

    limits: dict[str, LimitState | None]
    now_ms: float
    cap: int
    held: dict[str, int]


@dataclass(frozen=True, slots=True)
class Choice:
    """One admission the gate chose: the tenant's place in the peek (0-based), the task id and its concurrency key
    (None: none). A task whose record is gone is passed as a choice too, so that its queue drops it."""

    tenant: int
    task_id: str
    key: str | None


def peek(
    keys: CapabilityKeys, tenants: Sequence[str], window: int, extra: int, held_back: Collection[str] = ()
) -> Op[tuple[int, list[wire.TenantPeek]]]:
    """The room left in the capability's window and, per tenant still waiting, its virtual time, weight, queue
    length and best-ranked tasks (its turns in that room plus ``extra``; the others count theirs as if the tenants
    ``held_back`` in the last pass were absent too, so their tasks cover the room), in one call."""
    script_keys = [keys.stream, keys.index, keys.tenants, keys.weights, *(keys.fair(t) for t in tenants)]
    flags = [1 if t in held_back else 0 for t in tenants]
    reply = yield [scripts.call("peek_fair", script_keys, [window, extra, len(tenants), *tenants, *flags])]
    return wire.fair_peek(check(reply[0]))


def gates(
    keyspace: KeySpace, keys: CapabilityKeys, limit_names: Sequence[str], concurrency_keys: Sequence[str]
) -> Op[Gates]:
    """The state of ``limit_names`` with Redis' clock, and the cap and live permits of ``concurrency_keys``
    (``count_permits.lua``), in one round trip."""
    commands: list[Any] = [("HMGET", keyspace.limit(n).state, "rate_per_min", "burst", "tat_ms") for n in limit_names]
    commands.append(("TIME",))
    if concurrency_keys:
        permit_keys = [keys.index, keys.caps, *(keys.permits(k) for k in concurrency_keys)]
        commands.append(scripts.call("count_permits", permit_keys, []))
    replies = yield commands
    states = {n: limits.state_of(n, check(r)) for n, r in zip(limit_names, replies, strict=False)}
    seconds, micros = check(replies[len(limit_names)])
    now_ms = int(seconds) * 1000 + int(micros) / 1000
    cap, held = 0, {}
    if concurrency_keys:
        counts = wire.permit_counts(check(replies[-1]), len(concurrency_keys))
        cap, held = counts[0], dict(zip(concurrency_keys, counts[1:], strict=True))
    return Gates(states, now_ms, cap, held)


def admit_chosen(
    keys: CapabilityKeys, tenants: Sequence[str], held_back: Sequence[bool], chosen: Sequence[Choice]
) -> Op[tuple[int, int]]:
    """Move the ``chosen`` tasks onto the stream (each keyed one taking its permit in the same step), advance their
    tenants' virtual times, and raise those of the ``held_back`` tenants (``admit_fair.lua``); (tasks moved,
    tenants still waiting)."""
    script_keys = [keys.stream, keys.index, keys.tenants, keys.weights, *(keys.fair(t) for t in tenants)]
    slots: dict[str, int] = {}
    args: list[Any] = [len(tenants), *tenants, *(1 if h else 0 for h in held_back)]
    for choice in chosen:
        slot = 0
        if choice.key is not None:
            slot = slots.get(choice.key, 0)
            if not slot:
                script_keys.append(keys.permits(choice.key))
                slot = slots[choice.key] = len(script_keys)
        args += [choice.tenant + 1, choice.task_id, slot]
    reply = yield [scripts.call("admit_fair", script_keys, args)]
    return wire.admitted(check(reply[0]))


HELD_TTL_MS = 3000
"""How long a snapshot of held-back tenants' tasks stays: a gate that stops writing it (its process died, the
lease moved) leaves stats counting those tasks as waiting for admission again after this."""


def held_command(keys: CapabilityKeys) -> Command:
    """The read of the capability's held-back snapshot (``note_held``), whose reply ``held_counts`` decodes."""
    return ("HMGET", keys.fair_held, "limit", "key")


def held_counts(reply: Any) -> tuple[int, int]:
    """The tenants' tasks the fair gate last found held back by a rate limit and by a key's cap, from the reply of
    ``held_command``; 0 and 0 when none is held or the snapshot expired."""
    by_limit, by_key = check(reply)
    return int(by_limit or 0), int(by_key or 0)


def held(every: Sequence[CapabilityKeys]) -> Op[list[tuple[int, int]]]:
    """Per capability, in order: ``held_counts``."""
    if not every:
        return []
    return [held_counts(r) for r in (yield [held_command(k) for k in every])]


def note_held(keys: CapabilityKeys, by_limit: int, by_key: int) -> Op[None]:
    """Record how many tenants' tasks the fair gate found held back by a rate limit and by a key's cap (for
    stats); none: the snapshot is deleted."""
    if by_limit or by_key:
        replies = yield [
            ("HSET", keys.fair_held, "limit", by_limit, "key", by_key),
            ("PEXPIRE", keys.fair_held, HELD_TTL_MS),
        ]
    else:
        replies = yield [("DEL", keys.fair_held)]
    for reply in replies:
        check(reply)


def rejoin(keys: CapabilityKeys, count: int, max_bytes: int) -> Op[int]:
    """Move up to ``count`` best-ranked tasks of the capability's rejoin set into their tenants' queues (each
    task's ``fairness_key`` read from its waiting record; one that holds none valid goes onto the stream, where
    its worker dead-letters it), ``rejoin.lua``; how many moved."""
    ids = [text(i) for i in check((yield [("ZRANGE", keys.rejoin, 0, count - 1)])[0])]
    if not ids:
        return 0
    records = check((yield [("HMGET", keys.index, *ids)])[0])
    tenants: dict[str, int] = {}
    pairs: list[Any] = []
    for task_id, record in zip(ids, records, strict=True):
        place = wire.place(record)
        tenant = codec.fairness_of(place.blob, max_bytes) if isinstance(place, wire.Delayed) else None
        pairs += [task_id, tenants.setdefault(tenant, len(tenants) + 1) if tenant is not None else 0]
    script_keys = [keys.stream, keys.index, keys.rejoin, keys.tenants, *(keys.fair(t) for t in tenants)]
    reply = yield [scripts.call("rejoin", script_keys, [len(tenants), *tenants, *pairs])]
    return wire.count(check(reply[0]), "rejoin")
