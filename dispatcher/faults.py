"""Test-only fault points and the execution ledger, for the chaos suite. Off unless configured.

``DISPATCHER_TEST_FAULT=<point>[:<n>]`` makes the process ``os._exit(137)`` the n-th time (default 1st) it
reaches ``<point>``: ``after_read`` (a task was read, its handler not started), ``after_handler`` (the
handler returned, its result not recorded), ``after_reclaim_read`` (the reaper read a dead worker's pending
entries, nothing re-added yet). ``DISPATCHER_TEST_LEDGER=<path>`` appends ``task_id worker pid time`` to
``<path>`` each time a handler finishes, before its result is recorded: a count kept outside Redis, so Redis
data loss cannot hide itself. Both are read once, when a worker or reaper starts (``Faults.from_env``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from dispatcher.errors import ConfigError

POINTS = frozenset({"after_read", "after_handler", "after_reclaim_read"})


@dataclass(slots=True)
class Faults:
    """The configured fault point (if any) and ledger (if any) of this process."""

    point: str = ""
    countdown: int = 0
    ledger_path: str = ""
    _ledger: int = field(default=-1, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Faults:
        """Read ``DISPATCHER_TEST_FAULT`` and ``DISPATCHER_TEST_LEDGER``; unknown points raise ``ConfigError``."""
        source = os.environ if env is None else env
        spec = source.get("DISPATCHER_TEST_FAULT", "")
        point, _, n = spec.partition(":")
        if point and point not in POINTS:
            raise ConfigError(f"DISPATCHER_TEST_FAULT: unknown point {point!r}; known: {sorted(POINTS)}")
        return cls(
            point=point, countdown=int(n or 1) if point else 0, ledger_path=source.get("DISPATCHER_TEST_LEDGER", "")
        )

    active: bool = field(init=False, default=False)
    """Whether anything is configured (the hot path checks this one attribute)."""

    def __post_init__(self) -> None:
        self.active = bool(self.point or self.ledger_path)

    def reach(self, point: str) -> None:
        """Exit the process abruptly when ``point`` is the configured one and its count is reached."""
        if point == self.point:
            self.countdown -= 1
            if self.countdown <= 0:
                os._exit(137)

    def record(self, task_id: str, worker: str) -> None:
        """Append one execution to the ledger (one write of one line: atomic between processes)."""
        if not self.ledger_path:
            return
        if self._ledger < 0:
            self._ledger = os.open(self.ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._ledger, f"{task_id} {worker} {os.getpid()} {time.time():.6f}\n".encode())
