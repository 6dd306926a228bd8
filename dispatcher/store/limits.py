"""Operations on named rate limits (``P:{limit.<name>}``, one hash each under its own hash tag, and the set
``P:limits`` that lists them): define, take units by GCRA (``take.lua``), refund, pause, read back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dispatcher.store import scripts, wire
from dispatcher.store.gateway import Op, check, text
from dispatcher.store.keys import KeySpace, LimitKeys


class Taken(Enum):
    """What ``take.lua`` did."""

    TAKEN = 1
    NOT_NOW = 0
    UNKNOWN = -1
    """No such limit."""
    OVER_BURST = -2
    """More units than the limit's burst: they never fit at once."""


@dataclass(frozen=True, slots=True)
class LimitState:
    """A limit as Redis holds it: its rate (units per minute), its burst, and GCRA's theoretical arrival time."""

    name: str
    rate_per_min: float
    burst: int
    tat_ms: float

    def available(self, now_ms: float) -> int:
        """Units that could be taken at ``now_ms`` (epoch ms, Redis' clock)."""
        interval = 60_000 / self.rate_per_min
        used = max(self.tat_ms - now_ms, 0.0) / interval
        return max(int(self.burst - used), 0)


def define(keyspace: KeySpace, name: str, rate_per_min: float, burst: int) -> Op[None]:
    """Create or change the limit ``name`` (its taken units are kept) and list it in ``P:limits``."""
    keys = keyspace.limit(name)
    replies = yield [
        ("HSET", keys.state, "rate_per_min", repr(rate_per_min), "burst", burst),
        ("SADD", keyspace.limits, name),
    ]
    for reply in replies:
        check(reply)


def take(keys: LimitKeys, units: int) -> Op[tuple[Taken, int]]:
    """Take ``units`` (negative: refund) from a limit; (what happened, ms until they would fit when not now)."""
    reply = check((yield [scripts.call("take", [keys.state], [units])])[0])
    return _taken(reply)


def take_many(wanted: Sequence[tuple[LimitKeys, int]]) -> Op[list[Taken]]:
    """Take (negative: refund) units from several limits in one round trip, one ``take.lua`` call each (each on its
    limit's own slot). Taking the sum of several tasks' units in one call is taking them one after another: GCRA
    lets the sum in exactly when the last of them would fit."""
    if not wanted:
        return []
    replies = yield [scripts.call("take", [keys.state], [units]) for keys, units in wanted]
    return [_taken(check(r))[0] for r in replies]


def consume(keys: LimitKeys, units: int) -> Op[Taken]:
    """Debit ``units`` (negative: refund) whatever the room: a handler reporting the true cost after the call."""
    reply = check((yield [scripts.call("take", [keys.state], [units, "", "force"])])[0])
    return _taken(reply)[0]


def pause(keys: LimitKeys, pause_ms: int) -> Op[Taken]:
    """Let nothing be taken from the limit for ``pause_ms`` from now (a provider said 429), fleet-wide."""
    reply = check((yield [scripts.call("take", [keys.state], [0, pause_ms])])[0])
    return _taken(reply)[0]


def _taken(reply: Any) -> tuple[Taken, int]:
    if isinstance(reply, list) and len(reply) == 2 and all(isinstance(v, int) for v in reply):
        for member in Taken:
            if member.value == reply[0]:
                return member, int(reply[1])
    raise wire.unexpected("take", reply)


def exist(keyspace: KeySpace, names: Sequence[str]) -> Op[list[LimitState | None]]:
    """Each limit's state, or None where it is not defined."""
    if not names:
        return []
    replies = yield [("HMGET", keyspace.limit(n).state, "rate_per_min", "burst", "tat_ms") for n in names]
    return [state_of(n, check(r)) for n, r in zip(names, replies, strict=True)]


def state_of(name: str, values: list[Any]) -> LimitState | None:
    """A limit's state from the ``HMGET`` of its rate, burst and arrival time; None when it is not defined."""
    rate, burst, tat = values
    if rate is None or burst is None:
        return None
    return LimitState(name, float(rate), int(burst), float(tat or 0))


def every(keyspace: KeySpace) -> Op[tuple[list[LimitState], float]]:
    """Every defined limit, sorted by name, and Redis' clock (epoch ms)."""
    names_reply, clock = yield [("SMEMBERS", keyspace.limits), ("TIME",)]
    names = sorted(text(n) for n in check(names_reply))
    seconds, micros = check(clock)
    found = yield from exist(keyspace, names)
    return [s for s in found if s is not None], int(seconds) * 1000 + int(micros) / 1000
