"""Fleet upkeep: the delayed-task mover, the admitter and the reaper, each on a schedule, thread and connection of
its own.

Every worker runs both (so no extra process is needed), and ``dispatcher reaper`` runs them standalone; each holds
a fleet-wide lease, so exactly one mover and one reaper work at a time, whatever the fleet size. Apart, a reaper
pass over a huge pending list never delays a due retry (the mover ticks every 0.1 s on its own connection).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dispatcher.errors import DispatcherError
from dispatcher.faults import Faults
from dispatcher.fleet import mover
from dispatcher.fleet.admitter import Admitter
from dispatcher.fleet.mover import Mover
from dispatcher.fleet.reaper import Reaper
from dispatcher.settings import Settings
from dispatcher.store import liveness
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""Pause after a failed tick (Redis unavailable) before the next one."""


class Upkeep:
    """Runs the mover and the reaper until ``stop()``; ``owner`` names this process in the leases."""

    def __init__(self, settings: Settings, owner: str, faults: Faults | None = None) -> None:
        self.settings = settings
        self.owner = owner
        self.keyspace = KeySpace(settings.prefix)
        self._mover_gateway = Gateway(make_client(settings), settings.redis_url)
        self._reaper_gateway = Gateway(make_client(settings), settings.redis_url)
        self._admitter_gateway = Gateway(make_client(settings), settings.redis_url)
        self.mover = Mover(self._mover_gateway, self.keyspace, owner, settings.flow_window)
        self.admitter = Admitter(
            self._admitter_gateway, self.keyspace, owner, settings.flow_window, settings.max_payload_bytes
        )
        self.reaper = Reaper(self._reaper_gateway, settings, faults or Faults())
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.passes = 0

    def reap(self) -> None:
        """One reaper pass, if this process holds (or takes) the reaper's lease."""
        lease_ms = int(self.settings.reaper_interval_s * 2000)
        if self._reaper_gateway.run(liveness.lease(self.keyspace.reaper_lease, self.owner, lease_ms)):
            self.reaper.run_once()
            self.passes += 1

    def promote(self) -> int:
        """Move due delayed tasks of every known capability now; returns how many moved."""
        return self.mover.promote()

    def start(self) -> None:
        """Run the mover, the admitter and the reaper in daemon threads."""
        schedules: list[tuple[str, Callable[[], object], Callable[[], float]]] = [
            ("mover", self.mover.tick, lambda: mover.INTERVAL_S),
            ("admitter", self.admitter.tick, self.admitter.pause_s),
            ("reaper", self.reap, lambda: self.settings.reaper_interval_s),
        ]
        for name, tick, interval_s in schedules:
            thread = threading.Thread(
                target=self._loop, args=(name, tick, interval_s), name=f"{name}-{self.owner}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def run(self) -> None:
        """Start them all and block until ``stop()`` (or KeyboardInterrupt, which reaches the calling thread)."""
        self.start()
        while not self._stop.wait(0.5):
            pass

    def _loop(self, name: str, tick: Callable[[], object], interval_s: Callable[[], float]) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                tick()
                if failing:
                    log.info("upkeep resumed part=%s owner=%s", name, self.owner)
                failing = False
            except DispatcherError as e:
                if not failing:  # once per outage
                    log.warning("upkeep failed, retrying part=%s owner=%s error=%s", name, self.owner, e)
                failing = True
                self._stop.wait(RETRY_S)
            except Exception:  # a bug must not silently end the fleet's reaper or mover in this process
                log.exception("upkeep crashed, retrying part=%s owner=%s", name, self.owner)
                failing = True
                self._stop.wait(RETRY_S)
            self._stop.wait(interval_s())

    def stop(self) -> None:
        """Stop, wait for the threads, and release the leases this process holds, so that another process takes
        over at its next tick instead of after the lease expires."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        try:
            self.mover.release()
            self.admitter.release()
            self._reaper_gateway.run(liveness.lease(self.keyspace.reaper_lease, self.owner, 0))
        except DispatcherError as e:
            log.warning("lease release failed owner=%s error=%s", self.owner, e)
        self._mover_gateway.client.close()
        self._admitter_gateway.client.close()
        self._reaper_gateway.client.close()
