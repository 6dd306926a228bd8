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


@handler("bench.span")
async def span(task: Task) -> list[float]:
    """Async: sleep 10 ms; the start and end times, epoch seconds (how many ran at once, per key)."""
    started = time.time()
    await asyncio.sleep(0.01)
    return [started, time.time()]
