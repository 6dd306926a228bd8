"""A per-capability circuit breaker: a worker whose handler keeps failing stops pulling that capability.

A broken worker (bad deploy, missing credentials) would otherwise drain the queue into the dead-letter
stream while healthy workers wait. After ``threshold`` consecutive failures the circuit opens for a
cool-down that doubles on every repeated trip (up to ``max_cooldown_s``); then one trial task is let
through (half-open): success closes the circuit, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    """The circuit of one capability on one worker."""

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        max_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self.failures = 0
        self.trips = 0
        self._cooldown_s = cooldown_s
        self._open_until = 0.0
        self._trial_running = False

    @property
    def state(self) -> State:
        """``closed`` (normal), ``open`` (cooling down) or ``half_open`` (one trial allowed)."""
        if self.failures < self.threshold:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    def allowance(self, free: int) -> int:
        """How many of ``free`` slots this capability may fill now."""
        state = self.state
        if state == "closed":
            return free
        if state == "open" or self._trial_running:
            return 0
        return min(free, 1)

    def started(self) -> None:
        """A task was taken; in half-open state it is the trial."""
        if self.failures >= self.threshold and self.state == "half_open":  # a closed circuit: one comparison
            self._trial_running = True

    def seconds_until_trial(self) -> float:
        """Seconds until the circuit half-opens (0 when it is not open)."""
        return max(0.0, self._open_until - self._clock()) if self.state == "open" else 0.0

    def neutral(self) -> None:
        """A task ended in a way that says nothing about this worker's health (``Retry``, ``Reject``): a half-open
        trial is over without a verdict, and another one may start."""
        self._trial_running = False

    def record(self, ok: bool) -> bool:
        """Count a handler outcome. Returns True when this outcome tripped the circuit (opened it)."""
        was_trial = self._trial_running
        self._trial_running = False
        if ok:
            self.failures = 0
            self._cooldown_s = self.base_cooldown_s
            return False
        self.failures += 1
        if self.failures < self.threshold:
            return False
        if was_trial:
            self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s)
        elif self.failures > self.threshold:
            return False  # already open: late outcomes of tasks taken before the trip
        self.trips += 1
        self._open_until = self._clock() + self._cooldown_s
        return True
