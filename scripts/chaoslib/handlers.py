"""Handlers for the chaos scenarios (loaded by workers with ``--app chaoslib.handlers``).

Each handler first appends ``<task id> <pid> <time>`` to the runs ledger named by ``CHAOS_RUNS`` (when set):
that line is written when a run *starts*, so runs that kill their process are counted too (the worker's own
ledger only records runs that finished).
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

from workers import Task, handler

RUNS_ENV = "CHAOS_RUNS"


def _started(task: Task) -> None:
    path = os.environ.get(RUNS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{task.id} {os.getpid()} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)


def _seconds(task: Task) -> float:
    payload: Any = task.payload
    return float(payload.get("s", 0)) if isinstance(payload, dict) else 0.0


@handler("chaos.hold")
async def hold(task: Task) -> int:
    """Sleep ``payload["s"]`` seconds on the first attempt only; later attempts return at once.

    So a task re-delivered after its worker died finishes the moment it is started again: the time it shows
    up in the execution ledger is the time it was re-delivered.
    """
    _started(task)
    if task.attempt == 1:
        await asyncio.sleep(_seconds(task))
    return task.attempt


@handler("chaos.spin")
def spin(task: Task) -> int:
    """Burn CPU in the thread pool for ``payload["s"]`` seconds (a long sync handler holding the GIL often)."""
    _started(task)
    end = time.monotonic() + _seconds(task)
    n = 0
    while time.monotonic() < end:
        n += sum(range(1000))
    return task.attempt


@handler("chaos.poison")
def poison(task: Task) -> None:
    """Kill the whole worker process, as a segfault or the kernel's OOM killer would."""
    _started(task)
    os._exit(137)


@handler("chaos.balloon")
def balloon(task: Task) -> None:
    """Allocate without bound under an address-space rlimit of ~256 MB above the current size.

    CPython turns the failed allocation into ``MemoryError`` (the process survives): a handler failure.
    """
    _started(task)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        size_bytes = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size_bytes + (256 << 20), hard))
    try:
        hog = []
        for _ in range(10_000):  # bounded: 10,000 x 64 MB is far above any limit
            hog.append(bytearray(64 << 20))
    finally:
        hog = []
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
