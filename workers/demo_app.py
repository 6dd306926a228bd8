"""The demo's handlers, served by the demo's workers (``--app workers.demo_app``): a task that fails its first
attempt, one that refuses bad input, and a slow one to kill a worker under. The demo's throughput scene uses the
built-in ``sleep``."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from dispatcher.task import Task
from workers.registry import handler

FLAKY = "demo.flaky"
STRICT = "demo.strict"
SLOW = "demo.slow"


def ran(task: Task) -> dict[str, Any]:
    """Where and on which attempt a task ran: what the demo reads back to show retries and reclaims."""
    return {"attempt": task.attempt, "pid": os.getpid()}


@handler(FLAKY)
async def flaky(task: Task) -> dict[str, Any]:
    """Fail the first attempt (an ordinary exception: the task's retry policy applies), succeed afterwards."""
    if task.attempt == 1:
        raise RuntimeError("the first attempt fails on purpose")
    return ran(task)


@handler(STRICT, input_errors=(KeyError,))
async def strict(task: Task) -> str:
    """Upper-case ``payload["text"]``. A payload without it is bad input: the declared ``KeyError`` dead-letters
    the task as ``rejected`` at once (no retry would help)."""
    return str(task.payload["text"]).upper()


@handler(SLOW)
async def slow(task: Task) -> dict[str, Any]:
    """Sleep ``payload`` seconds, then say where it ran."""
    await asyncio.sleep(float(task.payload))
    return ran(task)
