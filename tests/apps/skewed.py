"""A worker whose clock runs ahead: importing this module (``--app apps.skewed``) shifts ``time.time`` by
``SKEWED_CLOCK_S`` seconds (default 30) for the whole process, as a misconfigured host would. The handlers write
the true time (``real_time``) to the ledger named by ``FAULTY_LEDGER``, so a test can check when they ran."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from workers import Retry, Task, handler

real_time = time.time
SKEW_S = float(os.environ.get("SKEWED_CLOCK_S", "30"))
time.time = lambda: real_time() + SKEW_S  # every time.time() in this process, the worker's own included


def _record(task: Task, event: str) -> None:
    line = json.dumps({"event": event, "task": task.id, "t": real_time(), "attempt": task.attempt}) + "\n"
    fd = os.open(os.environ["FAULTY_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@handler("skewed.run")
async def run(task: Task) -> Any:
    """Record the start; with ``retry_after_s`` in the payload, ask once for a retry that long after."""
    _record(task, "start")
    delay = task.payload.get("retry_after_s") if isinstance(task.payload, dict) else None
    if delay and task.attempt == 1:
        raise Retry(delay_s=float(delay))
    return task.attempt
