"""Handlers for the chaos scenarios (loaded by workers with ``--app chaoslib.handlers``).

Each handler first appends ``<task id> <pid> <time>`` to the runs ledger named by ``CHAOS_RUNS`` (when set):
that line is written when a run *starts*, so runs that kill their process are counted too (the worker's own
ledger only records runs that finished). The keyed handlers also write ``start``/``end`` lines with their task's
concurrency key to the spans ledger named by ``CHAOS_SPANS`` (``chaoslib.ledger.spans``).
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

from workers import Task, handler

RUNS_ENV = "CHAOS_RUNS"
SPANS_ENV = "CHAOS_SPANS"


def _append(env: str, line: str) -> None:
    path = os.environ.get(env)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)


def _started(task: Task) -> None:
    _append(RUNS_ENV, f"{task.id} {os.getpid()} {time.time():.6f}")


def _span(task: Task, kind: str) -> None:
    _append(SPANS_ENV, f"{kind} {task.id} {task.capability} {task.concurrency_key} {os.getpid()} {time.time():.6f}")


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


@handler("chaos.keyed1")
@handler("chaos.keyed2")
async def keyed(task: Task) -> int:
    """Sleep ``payload["s"]`` seconds between a ``start`` and an ``end`` line of the spans ledger (with the task's
    concurrency key), so that how many runs of one key overlapped is counted outside Redis. A run killed with
    ``kill -9`` has a start and no end: its span ends when its process died."""
    _span(task, "start")
    await asyncio.sleep(_seconds(task))
    _span(task, "end")
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
