"""The transitions of a task that leaves a worker's hands, as typed values, and the one op that records them.

A transition is a frozen value, pure and testable without Redis (``dispatcher.fleet.decide`` chooses them).
``record()`` turns a batch into script calls, with the settles of one capability, consumer and TTL merged into
``settle`` calls of up to ``SETTLE_CHUNK`` tasks each (one script call per batch on the worker's hottest path),
and decodes every reply through ``dispatcher.store.wire``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dispatcher.store import scripts, wire
from dispatcher.store.gateway import Command, Op, check
from dispatcher.store.keys import GROUP, CapabilityKeys
from dispatcher.store.wire import Applied

SETTLE_CHUNK = 200
"""Tasks per ``settle`` call: large enough to amortise the call, small enough not to stall Redis."""

Letter = tuple[tuple[str, bytes | str | int], ...]
"""The field/value pairs of a dead letter."""


@dataclass(frozen=True, slots=True)
class Settle:
    """Record a task's final result (``record``; None for a task that keeps none), ack and delete its entry."""

    keys: CapabilityKeys
    entry_id: str
    owner: str
    task_id: str
    record: bytes | None
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Requeue:
    """Give the task back to the fleet as a fresh entry, now or ``delay_ms`` from now (by Redis' clock), with these
    counts; ack and delete the old entry. With ``only_if_owner_dead``, only while the owner's heartbeat is gone."""

    keys: CapabilityKeys
    entry_id: str
    owner: str
    task_id: str
    blob: bytes
    version: bytes
    attempt: int
    reclaims: int
    delay_ms: int = 0
    only_if_owner_dead: bool = False
    failed_attempt: bool = True
    """The attempt failed (handler error, dead or hung worker): counted as failed in the throughput buckets.
    False for a hand-back, which is no attempt."""
    pause_limit: str | None = None
    """The key of a rate limit to pause for ``delay_ms`` (the handler raised ``RateLimited``): sent in the same
    round trip, as a step of its own (the limit lives under its own hash tag)."""
    lane: str = ""
    """The lane of a flow-controlled task (``wire.lane``): it goes through the delayed set (due now without a
    delay) and waits in its waiting set again when due. "" for a plain task, a hand-back and the reclaim of a
    keyed task (``decide.reclaim``)."""


@dataclass(frozen=True, slots=True)
class Bury:
    """Dead-letter the task (``letter``), store its ``dead`` result (``record``, None for none), ack and delete
    the entry. ``task_id`` is "" for an entry that could not be decoded."""

    keys: CapabilityKeys
    entry_id: str
    owner: str
    task_id: str
    record: bytes | None
    ttl_ms: int
    maxlen: int
    letter: Letter
    only_if_owner_dead: bool = False
    trusted_id: bool = True
    """False when ``task_id`` was read from an entry that did not decode: its result is then stored only if that
    id has none and the index names this entry or nothing (a forged entry cannot overwrite another task's)."""


@dataclass(frozen=True, slots=True)
class Release:
    """Ack an entry that was deleted from the stream while pending: there is nothing to run or to record."""

    keys: CapabilityKeys
    entry_id: str


Transition = Settle | Requeue | Bury | Release


def record(transitions: Sequence[Transition]) -> Op[list[Applied | Exception]]:
    """Record ``transitions`` in one round trip; per transition what it did, or our exception for a failed call
    (handed back, not raised, so that one failure does not hide the others)."""
    commands, spans = plan(transitions)
    replies = yield commands
    if len(replies) == 1 and type(replies[0]) is list and len(replies[0]) == len(transitions):
        values = replies[0]  # one settle call for the whole batch, the common case: map it at once
        if all(v == 1 and type(v) is int for v in values):
            return [Applied.DONE] * len(values)
    out: list[Applied | Exception] = []
    for transition, (call, position) in zip(transitions, spans, strict=True):
        try:
            reply = check(replies[call])
            if isinstance(transition, Release):
                out.append(Applied.DONE)  # acked now, or already: either way the entry is released
            elif position is None:
                out.append(wire.applied(reply, _script(transition)))
            else:
                out.append(wire.applied(reply[position], "settle"))
        except Exception as e:
            out.append(e)
    return out


def plan(transitions: Sequence[Transition]) -> tuple[list[Command], list[tuple[int, int | None]]]:
    """The commands that record ``transitions``, and per transition (index of its command, its position in
    that command's reply, or None when the command is its own)."""
    commands: list[Command] = []
    spans: list[tuple[int, int | None]] = [(0, None)] * len(transitions)
    settles: dict[tuple[str, str, int], list[int]] = {}
    for i, t in enumerate(transitions):
        if isinstance(t, Settle):
            settles.setdefault((t.keys.stream, t.owner, t.ttl_ms), []).append(i)
        else:
            if isinstance(t, Requeue) and t.pause_limit is not None:
                commands.append(scripts.call("take", [t.pause_limit], [0, t.delay_ms]))  # its reply is not read
            spans[i] = (len(commands), None)
            commands.append(_call(t))
    for members in settles.values():
        for start in range(0, len(members), SETTLE_CHUNK):
            chunk = members[start : start + SETTLE_CHUNK]
            for position, i in enumerate(chunk):
                spans[i] = (len(commands), position)
            commands.append(_settle_call([transitions[i] for i in chunk]))  # type: ignore[misc]
    return commands, spans


def _script(t: Transition) -> str:
    return "retry" if isinstance(t, Requeue) else "bury"


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _settle_call(batch: list[Settle]) -> Command:
    keys = batch[0].keys
    script_keys = [keys.stream, keys.index, keys.throughput]
    args: list[Any] = [GROUP, batch[0].owner, batch[0].ttl_ms, keys.channel_prefix, "", ""]
    low = high = _entry_order(batch[0].entry_id)
    first = last = batch[0].entry_id
    for s in batch:
        order = _entry_order(s.entry_id)
        if order < low:
            low, first = order, s.entry_id
        elif order > high:
            high, last = order, s.entry_id
        if s.record is None:
            args += (s.entry_id, s.task_id, b"")
        else:
            script_keys.append(keys.result_prefix + s.task_id)
            args += (s.entry_id, s.task_id, s.record)
    args[4], args[5] = first, last
    return scripts.call("settle", script_keys, args)


def _call(t: Requeue | Bury | Release) -> Command:
    keys = t.keys
    if isinstance(t, Release):
        return ("XACK", keys.stream, GROUP, t.entry_id)
    if isinstance(t, Requeue):
        script_keys = [keys.stream, keys.index, keys.delayed, keys.throughput]
        if t.only_if_owner_dead:
            script_keys.append(keys.heartbeat(t.owner))
        args: list[Any] = [GROUP, t.entry_id, t.owner, t.task_id, t.blob, t.attempt, t.reclaims, t.delay_ms, t.version]
        args.append(1 if t.failed_attempt else 0)
        if t.lane:
            args.append(t.lane)
        return scripts.call("retry", script_keys, args)
    script_keys = [keys.stream, keys.index, keys.dead, keys.result(t.task_id or "-"), keys.throughput]
    if t.only_if_owner_dead:
        script_keys.append(keys.heartbeat(t.owner))
    record_ = t.record if t.record is not None else b""
    args = [GROUP, t.entry_id, t.owner, t.task_id, record_, t.ttl_ms, keys.channel(t.task_id), t.maxlen]
    args.append(1 if t.trusted_id else 0)
    for field, value in t.letter:
        args += [field, value]
    return scripts.call("bury", script_keys, args)
