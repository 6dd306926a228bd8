"""Bench handlers, served with ``worker --app benchlib.handlers``: each returns ``time.time()`` at its start,
so the result record carries the handler's start time (submit-to-start latency)."""

from __future__ import annotations

import asyncio
import time

from dispatcher.task import Task
from workers import handler


@handler("bench.stamp")
async def stamp(task: Task) -> float:
    """Async: the start time, epoch seconds."""
    return time.time()


@handler("bench.stamp-sync")
def stamp_sync(task: Task) -> float:
    """Sync (thread pool): the start time, epoch seconds."""
    return time.time()


SHARDED = ("bench.shard0", "bench.shard2", "bench.shard3")
"""Capabilities whose slots (CRC16 of the name) fall on each third of the slot space: one per primary of a
3-primary cluster formed by ``redis-cli --cluster create``."""


@handler("bench.shard0")
async def shard0(task: Task) -> float:
    """Async: the start time, epoch seconds."""
    return time.time()


@handler("bench.shard2")
async def shard2(task: Task) -> float:
    """Async: the start time, epoch seconds."""
    return time.time()


@handler("bench.shard3")
async def shard3(task: Task) -> float:
    """Async: the start time, epoch seconds."""
    return time.time()


@handler("bench.span")
async def span(task: Task) -> list[float]:
    """Async: sleep 10 ms; the start and end times, epoch seconds (how many ran at once, per key)."""
    started = time.time()
    await asyncio.sleep(0.01)
    return [started, time.time()]
