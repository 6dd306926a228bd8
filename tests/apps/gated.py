"""Handlers that block until the test opens their gate (a file appears), for tests that must control when a
handler returns. Each run is written to the ``apps.faulty`` ledger (``FAULTY_LEDGER``).

Payload: ``gate`` (a path; no gate when absent), ``gate_attempts`` (the attempts that wait for it; all when
absent) and ``tag``. A gate is waited for at most ``GATE_LIMIT_S``, so a test that fails never leaves a thread
blocked for good.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from apps.faulty import record

from workers import Task, handler

GATE_LIMIT_S = 120.0
_POLL_S = 0.01

_lock = threading.Lock()
_active = [0]
"""Runs of ``gated.sync`` inside the handler right now, in this worker process."""


def _gated(task: Task) -> str | None:
    payload = task.payload if isinstance(task.payload, dict) else {}
    gate = payload.get("gate")
    attempts = payload.get("gate_attempts")
    return gate if gate and (attempts is None or task.attempt in attempts) else None


@handler("gated.sync")
def sync_gated(task: Task) -> dict[str, Any]:
    """A sync handler: wait for the gate, ignoring any ``timeout_s`` (Python cannot stop a thread).

    Its ``start`` record carries ``active``, how many runs of this handler were inside it at that moment
    (counted in-process, this one included), and ``thread``, the thread it runs on.
    """
    with _lock:
        _active[0] += 1
        active = _active[0]
    thread = threading.current_thread().name
    try:
        record(task, "start", active=active, thread=thread)
        gate = _gated(task)
        deadline = time.monotonic() + GATE_LIMIT_S
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        record(task, "end", thread=thread)
        return {"tag": task.payload.get("tag", ""), "attempt": task.attempt, "thread": thread}
    finally:
        with _lock:
            _active[0] -= 1


@handler("gated.async")
async def async_gated(task: Task) -> int:
    """An async handler: wait for the gate; returns the pid of the worker that ran it."""
    record(task, "start")
    gate = _gated(task)
    deadline = time.monotonic() + GATE_LIMIT_S
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
    record(task, "end")
    return os.getpid()
