"""Built-in capabilities for smoke tests, demos and benchmarks; served without any user module."""

from __future__ import annotations

import asyncio
from typing import Any

from dispatcher.task import Task
from workers.registry import handler

MAX_SLEEP_S = 3600.0


@handler("echo")
async def echo(task: Task) -> Any:
    """Return the payload unchanged."""
    return task.payload


@handler("noop")
def noop(task: Task) -> None:
    """Do nothing, in the thread pool: the cost of a sync handler."""


def _seconds(payload: Any) -> float:
    value = payload.get("seconds", 0) if isinstance(payload, dict) else payload
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_SLEEP_S:
        raise ValueError(f"sleep takes a number of seconds from 0 to {MAX_SLEEP_S}, got {value!r}")
    return float(value)


@handler("sleep")
async def sleep(task: Task) -> float:
    """Sleep ``payload`` seconds (a number, or ``{"seconds": n}``) and return it."""
    seconds = _seconds(task.payload)
    await asyncio.sleep(seconds)
    return seconds
