"""What every scenario shares: the run context and small bounded waits."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslib.topology_world import TopologyWorld
from chaoslib.world import Timers, World


@dataclass(frozen=True, slots=True)
class Ctx:
    """How to run: where, with which timers, quick or full, which seed."""

    workdir: Path
    timers: Timers
    quick: bool
    seed: int
    topology: str = "single"
    """``single`` (a private redis-server) or ``cluster`` (a private 3-primary Redis Cluster, no replicas)."""

    def world(self, name: str, **kwargs: Any) -> World:
        timers = kwargs.pop("timers", self.timers)
        if self.topology == "cluster":
            if kwargs:  # AOF, server flags: one server's options (such scenarios are not marked on_cluster)
                raise ValueError(f"a cluster world takes none of {sorted(kwargs)}")
            return TopologyWorld(name, self.workdir, timers, self.seed, "cluster", replicas=0)
        return World(name, self.workdir, timers, self.seed, **kwargs)

    def scale(self, quick: int, full: int) -> int:
        return quick if self.quick else full


def wait_for(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.05) -> Any:
    """``predicate()``'s first truthy value, or None once ``timeout_s`` passed (never raises on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


def pending_of(world: World, capability: str, consumer: str | None = None) -> int:
    """Entries in the group's pending list (of one consumer, or all)."""
    c = world.client()
    stream = world.keys(capability).stream
    try:
        if consumer is None:
            return int(c.xpending(stream, "workers")["pending"])
        return len(c.xpending_range(stream, "workers", "-", "+", 10_000, consumername=consumer))
    except Exception:  # no stream or group yet
        return 0


def tracebacks(world: World) -> list[str]:
    """Names of our logs that contain a Python traceback (a crash we did not cause on purpose)."""
    return [p.name for p in world.procs.logs.values() if p.exists() and "Traceback" in p.read_text(errors="replace")]
