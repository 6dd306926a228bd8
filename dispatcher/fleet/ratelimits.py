"""Operator API of named rate limits: define one (``dispatcher limits set``), list them with their use now, and
what waits for them (docs/flow-control.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dispatcher.errors import ConfigError
from dispatcher.store import fair, flow, limits, streams
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace
from dispatcher.task import MAX_KEY_LENGTH, check_capability, check_limit, is_key

_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|sec|second|m|min|minute|h|hour)\Z")
_PER_MIN = {"s": 60.0, "sec": 60.0, "second": 60.0, "m": 1.0, "min": 1.0, "minute": 1.0, "h": 1 / 60, "hour": 1 / 60}
MAX_RATE_PER_MIN = 1e12
MAX_PER_KEY = 1_000_000
MAX_WEIGHT = 1_000_000


def parse_rate(text: str) -> float:
    """Units per minute of ``500/min``, ``100/s`` or ``6000/hour``; raises ``ConfigError`` otherwise."""
    found = _RATE.match(text.strip())
    if not found:
        raise ConfigError(f"invalid rate {text!r}: write units per time, e.g. 500/min, 100/s or 6000/hour")
    per_min = float(found.group(1)) * _PER_MIN[found.group(2)]
    if not 0 < per_min <= MAX_RATE_PER_MIN:
        raise ConfigError(f"invalid rate {text!r}: it must be above 0 and at most {MAX_RATE_PER_MIN:.0e} per minute")
    return per_min


def default_burst(rate_per_min: float) -> int:
    """The burst when none is given: one second of the rate (at least one unit)."""
    return max(int(rate_per_min / 60), 1)


def define(gateway: Gateway, keyspace: KeySpace, name: str, rate_per_min: float, burst: int | None) -> int:
    """Create or change the limit ``name``; returns its burst. Raises ``ConfigError`` for a bad name or burst."""
    try:
        check_limit(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    chosen = default_burst(rate_per_min) if burst is None else burst
    if chosen < 1:
        raise ConfigError(f"invalid burst {chosen}: it must be at least 1 unit")
    gateway.run(limits.define(keyspace, name, rate_per_min, chosen))
    return chosen


def set_concurrency(gateway: Gateway, keyspace: KeySpace, capability: str, per_key: int) -> None:
    """Set the most tasks of one ``concurrency_key`` of ``capability`` that run at once, fleet-wide."""
    try:
        check_capability(capability)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not 1 <= per_key <= MAX_PER_KEY:
        raise ConfigError(f"invalid --per-key {per_key}: it must be from 1 to {MAX_PER_KEY}")
    gateway.run(streams.register_capabilities(keyspace.capabilities, [capability]))
    gateway.run(flow.set_cap(keyspace.capability(capability), per_key))


def set_weight(gateway: Gateway, keyspace: KeySpace, capability: str, tenant: str, weight: float) -> None:
    """Set the fairness weight of ``tenant`` (a ``fairness_key``) in ``capability`` (default 1)."""
    try:
        check_capability(capability)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not is_key(tenant):
        raise ConfigError(f"invalid tenant {tenant!r}: use 1-{MAX_KEY_LENGTH} printable characters without whitespace")
    if not 0 < weight <= MAX_WEIGHT:
        raise ConfigError(f"invalid weight {weight:g}: it must be above 0 and at most {MAX_WEIGHT}")
    gateway.run(flow.set_weight(keyspace.capability(capability), tenant, weight))


@dataclass(frozen=True, slots=True)
class LimitView:
    """A limit as ``dispatcher limits`` shows it."""

    name: str
    rate_per_min: float
    burst: int
    available: int
    """Units that could be taken now."""


@dataclass(frozen=True, slots=True)
class LimitsView:
    """Every limit, and per capability how many tasks wait for a limit in its limited set."""

    limits: tuple[LimitView, ...]
    waiting_for_limit: dict[str, int]
    """Per capability: tasks waiting for a rate limit (with or without a concurrency key), tenants' tasks the fair
    gate last found held back by one included."""
    waiting_for_key: dict[str, int]
    """Per capability: tasks with a concurrency key and no rate limit, waiting for a permit (tenants' tasks held
    back by their key included)."""
    caps: dict[str, int]
    """Per capability: its per-key concurrency cap, where one is set."""


def describe(gateway: Gateway, keyspace: KeySpace) -> LimitsView:
    """Every defined limit with the units available now, and the tasks waiting for limits per capability."""
    states, now_ms = gateway.run(limits.every(keyspace))
    names = gateway.run(streams.known_capabilities(keyspace.capabilities))
    every = [keyspace.capability(n) for n in names]
    counts = gateway.run(flow.waiting_for_limits(every))
    held = gateway.run(fair.held(every))
    caps = gateway.run(flow.caps(every))
    views = tuple(LimitView(s.name, s.rate_per_min, s.burst, s.available(now_ms)) for s in states)
    totals = [(c[0] + h[0], c[1] + h[1]) for c, h in zip(counts, held, strict=True)]
    for_limit = {n: c[0] for n, c in zip(names, totals, strict=True) if c[0]}
    for_key = {n: c[1] for n, c in zip(names, totals, strict=True) if c[1]}
    capped = {n: c for n, c in zip(names, caps, strict=True) if c is not None}
    return LimitsView(views, for_limit, for_key, capped)
