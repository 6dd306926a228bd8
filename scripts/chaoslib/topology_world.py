"""A scenario's world on a Redis Cluster or a Sentinel set instead of one server: the failover scenarios (17, 18)
use it with replicas, and ``scripts/chaos --topology cluster`` runs the other scenarios that allow it on a
3-primary cluster without replicas. Every process is started through the world's ``Procs``, stopped by PID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaoslib.topologies import ClusterProcs, SentinelProcs
from chaoslib.world import Timers, World

KINDS = ("single", "cluster")
"""The topologies ``scripts/chaos --topology`` runs scenarios on (Sentinel only in its failover scenario)."""


class TopologyWorld(World):
    """A ``World`` whose Redis is a cluster (``replicas`` per primary) or a Sentinel-managed primary."""

    def __init__(self, name: str, workdir: Path, timers: Timers, seed: int, kind: str, replicas: int = 1) -> None:
        super().__init__(name, workdir, timers, seed)
        self.kind = kind
        self.topology: ClusterProcs | SentinelProcs = (
            ClusterProcs(self.procs, self.dir, primaries=3, replicas=replicas)
            if kind == "cluster"
            else SentinelProcs(self.procs, self.dir)
        )

    def __enter__(self) -> TopologyWorld:
        self.topology.start()
        self.url = self.topology.url
        return self

    def client(self) -> Any:
        """A client of the topology as it is now (the cluster's slot map, the Sentinels' current primary)."""
        c = self.topology.client()
        self._clients.append(c)
        return c

    def uptime_s(self) -> float:
        """The shortest uptime of the live Redis nodes."""
        if isinstance(self.topology, ClusterProcs):
            return min(float(n.client().info("server")["uptime_in_seconds"]) for n in self.topology.live())
        return super().uptime_s()
