"""The delayed-task mover: moves due delayed tasks (retries in backoff, submits with ``delay_s``) onto their streams,
and flow-controlled ones into the waiting sets they wait in at submit (docs/flow-control.md).

One process at a time holds the mover's lease (``P:promoter:lease``); the others' ticks do nothing. It runs on a
schedule of its own (``dispatcher.fleet.upkeep``), so a long reaper pass never delays a due retry.
"""

from __future__ import annotations

from dispatcher.settings import FLOW_WINDOW
from dispatcher.store import liveness, streams
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

INTERVAL_S = 0.1
"""How often the lease holder moves due delayed tasks: the most a retry or delayed task starts late."""
BATCH = 1000
"""Due tasks moved per capability per tick."""
LEASE_MS = 2000


class Mover:
    """Moves due delayed tasks of every known capability while it holds the mover's lease."""

    def __init__(self, gateway: Gateway, keyspace: KeySpace, owner: str, window: int = FLOW_WINDOW) -> None:
        self.gateway = gateway
        self.keyspace = keyspace
        self.owner = owner
        self.window = window

    def tick(self) -> int:
        """Take or renew the lease and, when held, move what is due; returns how many tasks moved."""
        if not self.gateway.run(liveness.lease(self.keyspace.promoter_lease, self.owner, LEASE_MS)):
            return 0
        return self.promote()

    def promote(self) -> int:
        """Move due delayed tasks of every known capability now (lease or not); returns how many moved."""
        names = self.gateway.run(streams.known_capabilities(self.keyspace.capabilities))
        keys = [self.keyspace.capability(name) for name in names]
        return self.gateway.run(streams.promote(keys, BATCH, self.window))

    def release(self) -> None:
        """Give up the lease (if held), so another process takes over at its next tick."""
        self.gateway.run(liveness.lease(self.keyspace.promoter_lease, self.owner, 0))
