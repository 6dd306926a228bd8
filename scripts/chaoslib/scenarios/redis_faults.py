"""Redis itself misbehaving: 6 crash with AOF, 12 memory full, 13 keys deleted, 14 memory bound."""

from __future__ import annotations

from chaoslib.scenarios.common import Ctx
from chaoslib.verdict import Verdict


def redis_crash(ctx: Ctx, v: Verdict) -> None:
    raise NotImplementedError


def memory_full(ctx: Ctx, v: Verdict) -> None:
    raise NotImplementedError


def deleted(ctx: Ctx, v: Verdict) -> None:
    raise NotImplementedError


def memory_bound(ctx: Ctx, v: Verdict) -> None:
    raise NotImplementedError
