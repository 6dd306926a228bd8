"""The throughput ring of a capability (``{p}:{C}:tput``), read back: completed and failed tasks over the last minute.

The settle, retry and bury scripts bump it (``lua/include/tput.lua``): 16 slots of 5 s buckets by Redis' clock,
each slot ``i`` holding its bucket number in ``b<i>`` and its counts in ``c<i>`` (completed) and ``f<i>``
(failed). A slot whose stamp is outside the window is an old bucket that nobody has overwritten yet: ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

BUCKET_S = 5
"""Seconds per bucket (as in tput.lua)."""
RING = 16
"""Slots in the ring (as in tput.lua): 80 s, more than the 60 s window plus the bucket being written."""
WINDOW_BUCKETS = 12
"""Buckets read back: the current one and the 11 before it, so between 55 and 60 s."""


@dataclass(frozen=True, slots=True)
class Throughput:
    """Tasks completed and failed in the window, and the window's length."""

    completed: int
    failed: int
    window_s: float
    """Seconds from the start of the oldest bucket that counted anything to now (at most 60); 0 when none did."""

    @property
    def completed_per_s(self) -> float:
        """Completed tasks per second over the window (0.0 when nothing completed)."""
        return self.completed / self.window_s if self.window_s > 0 and self.completed else 0.0


def window(raw: Mapping[bytes | str, bytes | str], now_s: float) -> Throughput:
    """Sum the ring's buckets of the last minute at Redis time ``now_s``.

    The window starts at the oldest bucket with counts, not 60 s back: a fleet that started 10 s ago is rated
    over those 10 s (plus at most one bucket), not diluted over a minute it did not work.
    """
    fields = {_text(k): int(_text(v)) for k, v in raw.items()}
    now_bucket = int(now_s // BUCKET_S)
    completed = failed = 0
    oldest: int | None = None
    for bucket in range(now_bucket - WINDOW_BUCKETS + 1, now_bucket + 1):
        slot = bucket % RING
        if fields.get(f"b{slot}") != bucket:
            continue
        c, f = fields.get(f"c{slot}", 0), fields.get(f"f{slot}", 0)
        if c or f:
            completed, failed = completed + c, failed + f
            oldest = bucket if oldest is None else min(oldest, bucket)
    span = 0.0 if oldest is None else max(now_s - oldest * BUCKET_S, 1.0)
    return Throughput(completed, failed, span)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
