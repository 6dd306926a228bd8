"""16: ACL users, TLS, and a static check that task data is never unpickled or evaluated."""

from __future__ import annotations

from chaoslib.scenarios.common import Ctx
from chaoslib.verdict import Verdict


def security(ctx: Ctx, v: Verdict) -> None:
    raise NotImplementedError
