"""Operations on a capability's paused flag (``{p}:{C}:paused``): set it, clear it, read it.

The flag lives in Redis, in the capability's slot, so a pause survives worker restarts; every worker reads the
flags of its capabilities with each heartbeat (``liveness.heartbeat``), pipelined in the same round trip.
"""

from __future__ import annotations

from dispatcher.store.gateway import Op, check
from dispatcher.store.keys import CapabilityKeys


def known(capabilities_key: str, name: str) -> Op[bool]:
    """Whether the capability set holds ``name`` (something was submitted to it or served it)."""
    return bool(check((yield [("SISMEMBER", capabilities_key, name)])[0]))


def set_paused(keys: CapabilityKeys, paused: bool) -> Op[bool]:
    """Pause (``SET``) or resume (``DEL``) the capability; True when this changed the flag."""
    if paused:
        reply = (yield [("SET", keys.paused, "1", "NX")])[0]
        return check(reply) is not None
    return bool(check((yield [("DEL", keys.paused)])[0]))
