"""The result listener's bookkeeping (sans-IO): who waits on which channel, which channels are held for
handles, what to subscribe and unsubscribe, and whom a message wakes. ``dispatcher.listener`` drives it over
redis-py's pub/sub and explains the protocol."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Any

from dispatcher.errors import ResultTimeout

RECHECK_S = 5.0
"""A waiter re-reads its result at least this often, whatever it heard: the backstop for a lost announcement."""

MAX_HELD = 10_000
"""At most this many channels are held for handles at once; tasks submitted beyond it are not held."""

MAX_HELD_BYTES = 8 * 1024 * 1024
"""At most this many bytes of announced result records are kept for held channels at once. An announcement beyond
it keeps only the fact that its task settled: its ``result()`` then reads the record (one GET) instead of taking
it from memory. So a producer holding many large results grows by this much at most, not by their sum."""

_NOT_KEPT = b""
"""A held channel's value once its announcement came but its record was not kept (no record is empty)."""


def remaining_s(deadline: float | None) -> float:
    """How long to wait before the next re-read; raises ``ResultTimeout`` once ``deadline`` has passed."""
    if deadline is None:
        return RECHECK_S
    left = deadline - time.monotonic()
    if left <= 0:
        raise ResultTimeout("the task did not settle in time")
    return min(left, RECHECK_S)


class Waiter:
    """One ``result()`` call waiting on ``channel``: ``wake()`` asks it to re-read; ``record`` is what an
    announcement carried."""

    __slots__ = ("_wake", "channel", "record")

    def __init__(self, channel: str, wake: Callable[[], None]) -> None:
        self.channel = channel
        self.record: bytes | None = None
        self._wake = wake

    def wake(self, record: bytes | None = None) -> None:
        if record is not None:
            self.record = record
        self._wake()


class Subscriptions:
    """Who waits on which channel (sans-IO): what to subscribe, what to unsubscribe, whom a message wakes.

    Not thread-safe on its own: each driver calls it under its own lock (the sync one from several threads).
    """

    def __init__(self) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        # held channel -> its announced record, None until announced, _NOT_KEPT when announced over the bound
        self._held: dict[str, bytes | None] = {}
        self._held_bytes = 0  # the size of every record kept in _held
        self._released: collections.deque[str] = collections.deque()
        self._idle: set[str] = set()

    @property
    def busy(self) -> bool:
        return bool(self._waiters or self._held)

    def holds(self, channel: str) -> bool:
        return channel in self._held

    def hold(self, channels: Sequence[str]) -> list[str]:
        """Keep ``channels`` subscribed until ``release``, keeping their announcement for a later waiter.

        Returns the channels to SUBSCRIBE now (none beyond ``MAX_HELD`` held channels).
        """
        self._apply_released()
        new = []
        for channel in channels:
            if channel in self._held:
                continue
            if len(self._held) >= MAX_HELD:
                break
            self._held[channel] = None
            self._idle.discard(channel)
            if channel not in self._waiters:
                new.append(channel)
        return new

    def release(self, channel: str) -> None:
        """Stop holding ``channel`` (its handle is gone or has its result); again is harmless."""
        if channel in self._held:
            self._held_bytes -= len(self._held.pop(channel) or b"")
            self._drop_if_unwanted(channel)

    def release_later(self, channel: str) -> None:
        """``release`` at the next ``hold`` or ``take_idle``: safe from any thread, so from a finalizer too."""
        self._released.append(channel)

    def _apply_released(self) -> None:
        while self._released:
            self.release(self._released.popleft())

    def join(self, waiter: Waiter) -> bool:
        """Add ``waiter``; True when its channel was not subscribed, so the caller must send SUBSCRIBE.

        A waiter that joins a channel already subscribed is woken at once, with the announcement when a held
        channel has had it and kept its record: else the confirmation it would wait for may have come already
        (or the announcement came and only its fact was kept): the wake-up makes it read. If the confirmation
        has not come, it comes later and wakes this waiter again.
        """
        channel = waiter.channel
        announced = self._held.get(channel)
        if announced:
            waiter.wake(announced)
            return False
        group = self._waiters.get(channel)
        self._idle.discard(channel)
        if group is None:
            self._waiters[channel] = {waiter}
            if channel not in self._held:
                return True
        else:
            group.add(waiter)
        waiter.wake()
        return False

    def leave(self, waiter: Waiter) -> None:
        """Remove ``waiter`` (again is harmless); a channel nobody wants any more is due for UNSUBSCRIBE."""
        group = self._waiters.get(waiter.channel)
        if group is None or waiter not in group:
            return
        group.discard(waiter)
        if not group:
            del self._waiters[waiter.channel]
            self._drop_if_unwanted(waiter.channel)

    def _drop_if_unwanted(self, channel: str) -> None:
        awaited_announcement = channel in self._held and self._held[channel] is None
        if channel not in self._waiters and not awaited_announcement:
            self._idle.add(channel)

    def take_idle(self) -> list[str]:
        """Channels to unsubscribe now (no waiter joined them since they went idle)."""
        self._apply_released()
        idle, self._idle = list(self._idle), set()  # join() takes a re-joined channel out of this set
        return idle

    def deliver(self, message: dict[str, Any]) -> None:
        """Hand one pub/sub message to the waiters of its channel."""
        raw = message.get("channel")
        channel = raw.decode() if isinstance(raw, bytes) else str(raw)
        kind = message.get("type")
        data = message.get("data")
        if kind == "message" and isinstance(data, bytes) and channel in self._held:
            self._keep(channel, data)  # for the handle's result(); nothing more will be announced
            self._drop_if_unwanted(channel)
        group = self._waiters.get(channel)
        if group is None:
            if kind == "subscribe" and channel not in self._held:  # re-subscribed after a reconnect, unwanted
                self._idle.add(channel)
            return
        if kind == "message" and isinstance(data, bytes):
            for waiter in list(group):
                waiter.wake(data)
        elif kind == "subscribe":
            for waiter in list(group):
                waiter.wake()

    def _keep(self, channel: str, record: bytes) -> None:
        self._held_bytes -= len(self._held[channel] or b"")
        if self._held_bytes + len(record) <= MAX_HELD_BYTES:
            self._held[channel] = record
            self._held_bytes += len(record)
        else:
            self._held[channel] = _NOT_KEPT

    def wake_all(self) -> None:
        """Ask every waiter to re-read (the connection was lost: announcements may have been missed)."""
        for group in self._waiters.values():
            for waiter in list(group):
                waiter.wake()
