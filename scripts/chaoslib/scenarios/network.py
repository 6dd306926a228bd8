"""Network faults through the proxy: 7 unreachable, 8 half-open, 9 reply loss."""

from __future__ import annotations

from chaoslib.scenarios.common import Ctx
from chaoslib.verdict import Verdict


def unreachable(ctx: Ctx, v: Verdict) -> None:
    raise NotImplementedError


def blackhole(ctx: Ctx, v: Verdict) -> None:
    raise NotImplementedError


def reply_loss(ctx: Ctx, v: Verdict) -> None:
    raise NotImplementedError
