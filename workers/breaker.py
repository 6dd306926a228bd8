"""A per-capability circuit breaker: a worker whose handler fails for every task stops pulling that capability.

What it is for: a *broken worker* (a missing GPU, a dead dependency, bad credentials) would otherwise drain the
queue into the dead-letter stream while healthy workers could have run those tasks. What it must not do: turn a
batch of bad requests into an outage. So it counts only failures that say something about the worker: never a
``Reject``, a ``Retry``, or an exception the handler declares as an input error (``@handler(...,
input_errors=...)``; those dead-letter the task as ``rejected`` at once). It trips when, among the last ``window``
outcomes, at least ``ratio`` failed, spread over at least ``threshold`` different tasks (one task failing its four
attempts is one bad task, not a broken worker). Then it stays open for a cool-down that doubles on every failed
trial, up to ``max_cooldown_s``; after it, one trial task is let through (half-open): success closes the circuit,
failure opens it again. While open, the capability's tasks wait in the stream for other workers (or for this one
to heal) instead of being dead-lettered.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    """The circuit of one capability on one worker.

    Args:
        threshold: distinct failing tasks the window must hold to trip.
        cooldown_s: the first cool-down.
        max_cooldown_s: the longest cool-down.
        window: outcomes remembered.
        ratio: share of failures among them that trips (with ``threshold`` distinct tasks).
    """

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        max_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        window: int = 20,
        ratio: float = 0.8,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.ratio = ratio
        self._clock = clock
        self._window: deque[str | None] = deque(maxlen=max(window, threshold))  # None: a success; else a task id
        self.trips = 0
        self.opened = False
        self.dirty = False
        """Whether anything but successes was seen since the circuit was last clean (the hot path's one check)."""
        self._cooldown_s = cooldown_s
        self._open_until = 0.0
        self._trial_running = False

    @property
    def state(self) -> State:
        """``closed`` (normal), ``open`` (cooling down) or ``half_open`` (one trial allowed)."""
        if not self.opened:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    @property
    def failures(self) -> int:
        """Failures among the remembered outcomes."""
        return sum(1 for outcome in self._window if outcome is not None)

    def allowance(self, free: int) -> int:
        """How many of ``free`` slots this capability may fill now."""
        if not self.opened:
            return free
        if self._trial_running or self._clock() < self._open_until:
            return 0
        return min(free, 1)

    def started(self) -> None:
        """A task was taken; in half-open state it is the trial."""
        if self.opened and self.state == "half_open":
            self._trial_running = True

    def seconds_until_trial(self) -> float:
        """Seconds until the circuit half-opens (0 when it is not open)."""
        return max(0.0, self._open_until - self._clock()) if self.state == "open" else 0.0

    def neutral(self) -> None:
        """A task ended in a way that says nothing about this worker's health (``Retry``, ``Reject``, a declared
        input error): a half-open trial is over without a verdict, and another one may start."""
        self._trial_running = False

    def succeeded(self) -> bool:
        """Count a success; True when it closed an open circuit (a successful trial)."""
        was_open = self.opened
        self._trial_running = False
        if was_open:
            self.opened = False
            self._cooldown_s = self.base_cooldown_s
            self._window.clear()
            self.dirty = False
        else:
            self._window.append(None)
        return was_open

    def failed(self, task_id: str) -> bool:
        """Count a failure of ``task_id`` that says something about the worker; True when it opened the circuit."""
        self.dirty = True
        if self.opened:
            if not self._trial_running:
                return False  # late outcomes of tasks taken before the trip: already open
            self._trial_running = False
            self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s)
            return self._open()
        self._window.append(task_id)
        failing = [outcome for outcome in self._window if outcome is not None]
        if len(set(failing)) >= self.threshold and len(failing) >= self.ratio * len(self._window):
            return self._open()
        return False

    def _open(self) -> bool:
        self.opened = True
        self.trips += 1
        self._open_until = self._clock() + self._cooldown_s
        return True
