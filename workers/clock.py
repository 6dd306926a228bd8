"""Redis' clock, as this worker sees it: its own clock plus the offset measured at each heartbeat.

Expiry is decided by Redis' clock, never by a worker's (a worker whose clock is 30 s ahead must not dead-letter a
task as expired that has 20 s to go); due times are decided inside the scripts with ``TIME`` (``clock.lua``)."""

from __future__ import annotations

import time


class ServerClock:
    """``now()`` is epoch seconds by Redis' clock; ``observe`` corrects it from a ``TIME`` reply."""

    __slots__ = ("offset_s",)

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        return time.time() + self.offset_s

    def observe(self, server_s: float, sent_s: float, received_s: float) -> None:
        """A ``TIME`` reply ``server_s``, for a request sent at ``sent_s`` and answered at ``received_s`` (both by
        this machine's clock): Redis read its clock about half way."""
        self.offset_s = server_s - (sent_s + received_s) / 2
