"""The fetch loop's pause while Redis cannot be reached: 50 ms doubling to a 1 s cap, and back to 50 ms when a
cluster client's slot map names new primaries (a replica took over). Logic only: a gateway stand-in whose every
read fails, and the pauses recorded instead of slept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dispatcher.errors import RedisUnavailable
from dispatcher.store.keys import KeySpace
from workers.breaker import Breaker
from workers.reader import OUTAGE_BACKOFF, Reader
from workers.slots import Slots


class DownGateway:
    """Every operation fails as an unreachable Redis does; ``primaries`` is what a cluster client's map says."""

    cluster = True

    def __init__(self) -> None:
        self.map: frozenset[str] = frozenset({"127.0.0.1:7000", "127.0.0.1:7001"})

    def primaries(self) -> frozenset[str]:
        return self.map

    async def run(self, op: Any) -> Any:
        op.close()
        raise RedisUnavailable("redis unavailable at redis+cluster://127.0.0.1:7000")


def pauses(failures: int, promote_after: int | None = None) -> list[float]:
    """The pauses of a reader whose reads all fail, ``failures`` of them; the gateway's map names a promoted
    replica from failure ``promote_after`` on."""
    gateway = DownGateway()
    stopping = asyncio.Event()
    waited: list[float] = []
    reader = Reader(
        gateway,  # type: ignore[arg-type]
        "c1",
        {"echo": KeySpace("t").capability("echo")},
        Slots(capacity=4),
        runner=None,  # type: ignore[arg-type]
        breakers={"echo": Breaker(threshold=5, cooldown_s=1.0, max_cooldown_s=10.0)},
        block_ms=100,
        burst=False,
        stopping=stopping,
        slot_free=asyncio.Event(),
        settling=lambda: 0,
        recorded=lambda: 0,
    )

    async def wait(timeout_s: float, also: Any = None) -> None:
        waited.append(timeout_s)
        if promote_after is not None and len(waited) == promote_after:
            gateway.map = frozenset({"127.0.0.1:7000", "127.0.0.1:7101"})
        if len(waited) >= failures:
            stopping.set()

    reader._wait = wait  # type: ignore[method-assign]
    asyncio.run(reader.run())
    assert reader.failures == failures, "every read failed, counted once each"
    return waited


def test_pause_doubles_from_50_ms_up_to_a_1_s_cap() -> None:
    assert pauses(8) == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert OUTAGE_BACKOFF.max_s == 1.0


def test_pause_starts_again_at_50_ms_once_the_slot_map_names_a_promoted_replica() -> None:
    # The map changes after the 6th pause: the 7th failed read sees it and tries again soon, then backs off anew.
    assert pauses(9, promote_after=6) == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 0.05, 0.1, 0.2])
