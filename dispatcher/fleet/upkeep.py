"""Fleet upkeep: moves due delayed tasks to their streams and runs the reaper, each under a fleet-wide lease.

Every worker runs this in a thread of its own (so no extra process is needed), and ``dispatcher reaper`` runs
it standalone; the leases make exactly one mover and one reaper work at a time, whatever the fleet size.
"""

from __future__ import annotations

import logging
import threading
import time

from dispatcher.errors import DispatcherError
from dispatcher.faults import Faults
from dispatcher.fleet.reaper import Reaper
from dispatcher.settings import Settings
from dispatcher.store import liveness, streams
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

log = logging.getLogger(__name__)

PROMOTE_INTERVAL_S = 0.1
"""How often the lease holder moves due delayed tasks: the most a retry or delayed task starts late."""
PROMOTE_BATCH = 1000


class Upkeep:
    """Runs the mover and the reaper until ``stop()``; ``owner`` names this process in the leases."""

    def __init__(
        self, settings: Settings, owner: str, gateway: Gateway | None = None, faults: Faults | None = None
    ) -> None:
        self.settings = settings
        self.owner = owner
        self.keyspace = KeySpace(settings.prefix)
        self.gateway = gateway or Gateway(make_client(settings), settings.redis_url)
        self.reaper = Reaper(self.gateway, settings, faults or Faults())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_reap = 0.0
        self.passes = 0

    def tick(self) -> None:
        """One round: promote if holding the mover lease; reap if due and holding the reaper lease."""
        if self.gateway.run(liveness.lease(self.keyspace.promoter_lease, self.owner, 2000)):
            self.promote()
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + self.settings.reaper_interval_s
            lease_ms = int(self.settings.reaper_interval_s * 2000)
            if self.gateway.run(liveness.lease(self.keyspace.reaper_lease, self.owner, lease_ms)):
                self.reaper.run_once()
                self.passes += 1

    def promote(self) -> int:
        """Move due delayed tasks of every known capability; returns how many moved."""
        names = self.gateway.run(streams.known_capabilities(self.keyspace.capabilities))
        keys = [self.keyspace.capability(name) for name in names]
        return self.gateway.run(streams.promote(keys, int(time.time() * 1000), PROMOTE_BATCH))

    def run(self) -> None:
        """Tick until ``stop()``; Redis errors are logged (once per outage) and retried."""
        failing = False
        while not self._stop.is_set():
            try:
                self.tick()
                if failing:
                    log.info("upkeep resumed owner=%s", self.owner)
                failing = False
            except DispatcherError as e:
                if not failing:
                    log.warning("upkeep failed, retrying owner=%s error=%s", self.owner, e)
                failing = True
                self._stop.wait(1.0)
            except Exception:  # a bug must not silently end the fleet's reaper in this process
                log.exception("upkeep crashed, retrying owner=%s", self.owner)
                failing = True
                self._stop.wait(1.0)
            self._stop.wait(PROMOTE_INTERVAL_S)

    def start(self) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name=f"upkeep-{self.owner}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, wait for the thread, and release the leases this process holds, so that another process
        takes over at its next tick instead of after the lease expires."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            for key in (self.keyspace.promoter_lease, self.keyspace.reaper_lease):
                self.gateway.run(liveness.lease(key, self.owner, 0))
        except DispatcherError as e:
            log.warning("lease release failed owner=%s error=%s", self.owner, e)
        self.gateway.client.close()
