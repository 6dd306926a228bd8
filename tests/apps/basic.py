"""Handlers for the worker integration tests (``--app apps.basic``): sync and async, compute and sleep."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from workers import Task, handler


@handler("basic.square")
def square(task: Task) -> int:
    """A sync handler with a checkable answer: the payload squared."""
    return int(task.payload) ** 2


@handler("basic.async_square")
async def async_square(task: Task) -> dict[str, Any]:
    """An async handler: the payload squared, and the thread it ran on (the event loop's)."""
    await asyncio.sleep(0)
    return {"value": int(task.payload) ** 2, "thread": threading.current_thread().name}


@handler("basic.sync_sleep")
def sync_sleep(task: Task) -> dict[str, Any]:
    """Block ``payload`` seconds in the handler thread; report the thread and when it ran (epoch s)."""
    started = time.time()
    time.sleep(float(task.payload))
    return {"thread": threading.current_thread().name, "started": started, "ended": time.time()}
